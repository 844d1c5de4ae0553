//! Decoding causal contexts and objects: bytes from peers, disks and clients
//! become values that uphold their invariants, or are refused.
//!
//! A context has one meaning whatever order its entries arrive in, so it is
//! brought to its normal form (the one every encoder of keel writes). An
//! object has no such freedom: siblings out of order, a dot twice, a dot its
//! context does not cover or too many siblings mean the bytes were not made
//! by a correct node, and they are refused, never repaired into something
//! that might pass for a version.

use core::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use thiserror::Error;

use super::{Actor, CausalContext, Dot, OBJECT_SIBLINGS_MAX, Object, Sibling};

/// A context as it is laid out in bytes, before it is normalized.
#[derive(Deserialize)]
pub(super) struct ContextParts {
    vector: Vec<(Actor, u64)>,
    cloud: Vec<Dot>,
}

impl From<ContextParts> for CausalContext {
    fn from(parts: ContextParts) -> CausalContext {
        CausalContext::normalized(parts.vector, parts.cloud)
    }
}

impl CausalContext {
    /// The context that holds the dots of `vector` and `cloud`, in normal
    /// form. A vector that names an actor twice keeps the last entry, as an
    /// ordered map would. Entries already in normal form cost one pass.
    fn normalized(mut vector: Vec<(Actor, u64)>, mut cloud: Vec<Dot>) -> CausalContext {
        if !vector.is_sorted_by(|a, b| a.0 < b.0) {
            // A stable sort keeps repeats in arrival order; keep the last of each.
            vector.reverse();
            vector.sort_by_key(|&(actor, _)| actor);
            vector.dedup_by_key(|&mut (actor, _)| actor);
        }
        vector.retain(|&(_, n)| n > 0);
        if !cloud.is_sorted_by(|a, b| a < b) {
            cloud.sort_unstable();
            cloud.dedup();
        }
        let mut context = CausalContext { vector, cloud: Vec::new() };
        if context.cloud_fits(&cloud) {
            context.cloud = cloud;
        } else {
            // Dots the vector covers or that continue it fold into it.
            for dot in cloud {
                context.insert(dot);
            }
        }
        context
    }

    /// True when `cloud` (sorted, unique) may stand beside the vector as is:
    /// every dot lies beyond its actor's vector entry, with a gap.
    fn cloud_fits(&self, cloud: &[Dot]) -> bool {
        cloud.iter().all(|dot| dot.counter > self.vector_get(dot.actor).unwrap_or(0).saturating_add(1))
    }

    /// Whether the context is in normal form; `Object::invariants` uses it.
    pub(super) fn check_normal(&self) -> Result<(), &'static str> {
        if !self.vector.is_sorted_by(|a, b| a.0 < b.0) || self.vector.iter().any(|&(_, n)| n == 0) {
            return Err("vector not sorted, unique and without zero counters");
        }
        if !self.cloud.is_sorted_by(|a, b| a < b) {
            return Err("cloud not sorted and unique");
        }
        if !self.cloud_fits(&self.cloud) {
            return Err("cloud holds a dot its vector covers or continues");
        }
        Ok(())
    }
}

/// Why bytes were refused as an object.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectError {
    #[error("{count} siblings exceed the limit of {max}")]
    SiblingsTooMany { count: u64, max: u64 },
    #[error("sibling dot {0:?} has counter 0; counters start at 1")]
    ZeroCounter(Dot),
    #[error("siblings out of dot order: {earlier:?} after {later:?}")]
    Unsorted { later: Dot, earlier: Dot },
    #[error("two siblings share dot {0:?}")]
    DuplicateDot(Dot),
    #[error("sibling dot {0:?} is not in the object's context")]
    Uncovered(Dot),
    /// Never from decoding, which normalizes contexts: a bug in keel.
    #[error("the context is not in normal form: {0}")]
    Context(&'static str),
}

/// An object as it is laid out in bytes, before it is checked.
#[derive(Deserialize)]
pub(super) struct ObjectParts {
    #[serde(deserialize_with = "bounded_siblings")]
    siblings: Vec<Sibling>,
    context: CausalContext,
}

impl TryFrom<ObjectParts> for Object {
    type Error = ObjectError;

    fn try_from(parts: ObjectParts) -> Result<Object, ObjectError> {
        Object::from_parts(parts.siblings, parts.context)
    }
}

impl Object {
    /// The object of `siblings` and `context`, if they uphold its
    /// invariants: at most [`OBJECT_SIBLINGS_MAX`] siblings, sorted by dot,
    /// no dot twice, every dot counting from 1 and covered by `context`.
    pub fn from_parts(siblings: Vec<Sibling>, context: CausalContext) -> Result<Object, ObjectError> {
        check_siblings(&siblings, &context)?;
        Ok(Object { siblings, context })
    }
}

/// The checks of [`Object::from_parts`], shared with `Object::invariants`.
pub(super) fn check_siblings(siblings: &[Sibling], context: &CausalContext) -> Result<(), ObjectError> {
    if siblings.len() > OBJECT_SIBLINGS_MAX {
        let max = OBJECT_SIBLINGS_MAX as u64;
        return Err(ObjectError::SiblingsTooMany { count: siblings.len() as u64, max });
    }
    for pair in siblings.windows(2) {
        let (earlier, later) = (pair[0].dot, pair[1].dot);
        if earlier == later {
            return Err(ObjectError::DuplicateDot(later));
        }
        if earlier > later {
            return Err(ObjectError::Unsorted { later: earlier, earlier: later });
        }
    }
    for sibling in siblings {
        if sibling.dot.counter == 0 {
            return Err(ObjectError::ZeroCounter(sibling.dot));
        }
        if !context.contains(&sibling.dot) {
            return Err(ObjectError::Uncovered(sibling.dot));
        }
    }
    Ok(())
}

/// Decodes a sequence of siblings, refusing one longer than the limit
/// before allocating for it: a frame of tiny siblings would otherwise cost
/// many times its size in memory before the count could be checked.
fn bounded_siblings<'de, D: Deserializer<'de>>(decoder: D) -> Result<Vec<Sibling>, D::Error> {
    decoder.deserialize_seq(BoundedSiblings)
}

struct BoundedSiblings;

impl<'de> Visitor<'de> for BoundedSiblings {
    type Value = Vec<Sibling>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at most {OBJECT_SIBLINGS_MAX} siblings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Vec<Sibling>, A::Error> {
        let announced = items.size_hint().unwrap_or(0);
        if announced > OBJECT_SIBLINGS_MAX {
            return Err(de::Error::invalid_length(announced, &self));
        }
        let mut siblings = Vec::with_capacity(announced);
        while let Some(sibling) = items.next_element()? {
            if siblings.len() == OBJECT_SIBLINGS_MAX {
                return Err(de::Error::invalid_length(OBJECT_SIBLINGS_MAX + 1, &self));
            }
            siblings.push(sibling);
        }
        Ok(siblings)
    }
}
