//! Members, the claims made about them, and the order in which claims
//! supersede each other.
//!
//! Everything a node knows about a member is one claim: an incarnation, a
//! state, an address, who made it, and the newest layout version the member
//! is known to hold. Claims about one member are totally ordered (see
//! [`Update::cmp_claim`]), so a node keeps the greatest it has heard and all
//! nodes that heard the same claims agree, whatever order they came in.

use core::cmp::Ordering;
use core::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;
use crate::time::Instant;

/// The longest address a member may announce.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// A member's liveness as one node believes it. The declaration order is the
/// precedence at equal incarnation: a later state wins over an earlier one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum State {
    Alive,
    /// A probe went unanswered; the member has until its suspicion timeout
    /// to refute.
    Suspect,
    /// Suspected for the whole suspicion timeout. Still a member: only an
    /// operator removes one, and a higher incarnation makes it alive again.
    Dead,
    /// Announced by the member itself on a graceful leave. Above `Dead` so
    /// that the member's own word wins a tie with an accusation.
    Left,
}

impl State {
    /// Alive and suspected members are up: a suspicion is not a verdict.
    pub fn is_up(self) -> bool {
        matches!(self, State::Alive | State::Suspect)
    }
}

/// Where a member listens for its peers: an opaque string (host and port)
/// that only the driver interprets. Never empty, at most
/// [`ADDRESS_BYTES_MAX`] bytes, no whitespace or control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Address(String);

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressError {
    #[error("an address of {len} bytes, outside 1..={ADDRESS_BYTES_MAX}")]
    Length { len: usize },
    #[error("an address with whitespace or a control character")]
    Character,
}

impl Address {
    pub fn new(address: impl Into<String>) -> Result<Address, AddressError> {
        Address::try_from(address.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;

    fn try_from(address: String) -> Result<Address, AddressError> {
        if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
            return Err(AddressError::Length { len: address.len() });
        }
        if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AddressError::Character);
        }
        Ok(Address(address))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One member as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: NodeId,
    pub address: Address,
    /// Raised only by the member itself, to refute a claim about it.
    pub incarnation: u64,
    pub state: State,
    /// Who made the claim the state rests on: the member itself when alive
    /// or left, its first accuser when suspect or dead.
    pub by: NodeId,
    /// The newest layout version the member is known to hold.
    pub layout_version: u64,
    /// When this node last saw the member's state or incarnation change, on
    /// this node's clock.
    pub state_changed: Instant,
}

impl Member {
    /// The claim that states what this node knows of the member.
    pub fn claim(&self) -> Update {
        Update {
            id: self.id,
            address: self.address.clone(),
            incarnation: self.incarnation,
            state: self.state,
            by: self.by,
            layout_version: self.layout_version,
        }
    }
}

/// A claim about one member, as gossip carries it. Well formed by
/// construction: the member alone says it is alive or has left, and it never
/// accuses itself.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(try_from = "UpdateFields")]
pub struct Update {
    id: NodeId,
    address: Address,
    incarnation: u64,
    state: State,
    by: NodeId,
    layout_version: u64,
}

/// An update as it comes off the wire, before its rules are checked. The
/// fields are those of [`Update`] in the same order.
#[derive(Deserialize)]
struct UpdateFields {
    id: NodeId,
    address: Address,
    incarnation: u64,
    state: State,
    by: NodeId,
    layout_version: u64,
}

#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("{by} claims that {id} is {state:?}; only {id} may say so")]
    NotByMember { id: NodeId, state: State, by: NodeId },
    #[error("{id} accuses itself of being {state:?}")]
    SelfAccusation { id: NodeId, state: State },
}

impl TryFrom<UpdateFields> for Update {
    type Error = UpdateError;

    fn try_from(fields: UpdateFields) -> Result<Update, UpdateError> {
        let UpdateFields { id, address, incarnation, state, by, layout_version } = fields;
        Update::new(id, address, incarnation, state, by, layout_version)
    }
}

impl Update {
    pub fn new(
        id: NodeId,
        address: Address,
        incarnation: u64,
        state: State,
        by: NodeId,
        layout_version: u64,
    ) -> Result<Update, UpdateError> {
        match state {
            State::Alive | State::Left if by != id => return Err(UpdateError::NotByMember { id, state, by }),
            State::Suspect | State::Dead if by == id => {
                return Err(UpdateError::SelfAccusation { id, state });
            }
            _ => {}
        }
        Ok(Update { id, address, incarnation, state, by, layout_version })
    }

    /// `accuser`'s claim that `member` is suspect (or dead) at its current
    /// incarnation.
    pub(super) fn accusation(member: &Member, state: State, accuser: NodeId) -> Update {
        debug_assert!(matches!(state, State::Suspect | State::Dead));
        assert_ne!(member.id, accuser, "a node never accuses itself");
        Update { state, by: accuser, ..member.claim() }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn address(&self) -> &Address {
        &self.address
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn by(&self) -> NodeId {
        self.by
    }

    pub fn layout_version(&self) -> u64 {
        self.layout_version
    }

    /// How this claim ranks against what `member` records: a higher
    /// incarnation wins; at equal incarnation Left > Dead > Suspect > Alive;
    /// the address breaks the last tie (two processes claiming one id), so
    /// that keeping the greatest claim is a merge whatever the order.
    /// Neither the accuser nor the layout version takes part: several
    /// accusers of one suspicion are confirmations, and layout versions
    /// merge on their own (the highest).
    pub fn cmp_claim(&self, member: &Member) -> Ordering {
        rank(self.incarnation, self.state, &self.address).cmp(&rank(
            member.incarnation,
            member.state,
            &member.address,
        ))
    }
}

fn rank(incarnation: u64, state: State, address: &Address) -> (u64, State, &Address) {
    (incarnation, state, address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{Arbitrary, Gen, quickcheck};

    fn address(text: &str) -> Address {
        Address::new(text).unwrap()
    }

    fn member(incarnation: u64, state: State, by: u64) -> Member {
        Member {
            id: NodeId(1),
            address: address("a:1"),
            incarnation,
            state,
            by: NodeId(by),
            layout_version: 0,
            state_changed: Instant::ZERO,
        }
    }

    fn claim(incarnation: u64, state: State, by: u64) -> Update {
        Update::new(NodeId(1), address("a:1"), incarnation, state, NodeId(by), 0).unwrap()
    }

    /// The SWIM table: incarnation first, then Left > Dead > Suspect > Alive.
    #[test]
    fn claims_rank_by_incarnation_then_state() {
        use Ordering::*;
        use State::*;
        let cases = [
            (claim(2, Alive, 1), member(1, Dead, 2), Greater),
            (claim(1, Alive, 1), member(1, Suspect, 2), Less),
            (claim(1, Suspect, 2), member(1, Alive, 1), Greater),
            (claim(1, Dead, 3), member(1, Suspect, 2), Greater),
            (claim(1, Left, 1), member(1, Dead, 2), Greater),
            (claim(1, Suspect, 3), member(1, Suspect, 2), Equal),
            (claim(0, Left, 1), member(1, Alive, 1), Less),
        ];
        for (update, member, expected) in cases {
            assert_eq!(update.cmp_claim(&member), expected, "{update:?} against {member:?}");
        }
    }

    #[test]
    fn malformed_claims_are_refused() {
        let at = address("a:1");
        let alive_by_other = Update::new(NodeId(1), at.clone(), 0, State::Alive, NodeId(2), 0);
        assert!(matches!(alive_by_other, Err(UpdateError::NotByMember { .. })));
        let left_by_other = Update::new(NodeId(1), at.clone(), 0, State::Left, NodeId(2), 0);
        assert!(matches!(left_by_other, Err(UpdateError::NotByMember { .. })));
        let self_suspect = Update::new(NodeId(1), at, 0, State::Suspect, NodeId(1), 0);
        assert!(matches!(self_suspect, Err(UpdateError::SelfAccusation { .. })));
        assert!(Address::new("").is_err());
        assert!(Address::new("a b").is_err());
        assert!(Address::new("x".repeat(ADDRESS_BYTES_MAX + 1)).is_err());
        assert!(Address::new("x".repeat(ADDRESS_BYTES_MAX)).is_ok());
    }

    #[test]
    fn decoding_checks_the_rules() {
        let good = claim(3, State::Suspect, 2);
        let bytes = postcard::to_allocvec(&good).unwrap();
        assert_eq!(postcard::from_bytes::<Update>(&bytes).unwrap(), good);
        // The same fields with the accuser rewritten to the member itself.
        let forged = Update { by: NodeId(1), ..good };
        let bytes = postcard::to_allocvec(&forged).unwrap();
        assert!(postcard::from_bytes::<Update>(&bytes).is_err());
    }

    #[derive(Clone, Debug)]
    struct Claim(u64, State, Address);

    impl Arbitrary for Claim {
        fn arbitrary(g: &mut Gen) -> Claim {
            let state = *g.choose(&[State::Alive, State::Suspect, State::Dead, State::Left]).unwrap();
            let address = address(g.choose(&["a:1", "b:2"]).unwrap());
            Claim(u64::from(u8::arbitrary(g) % 4), state, address)
        }
    }

    impl Claim {
        fn update(&self) -> Update {
            let by = if matches!(self.1, State::Alive | State::Left) { 1 } else { 2 };
            Update::new(NodeId(1), self.2.clone(), self.0, self.1, NodeId(by), 0).unwrap()
        }
    }

    /// What a node keeps of a claim: the greater of the two.
    fn merge(kept: Member, claim: &Claim) -> Member {
        let update = claim.update();
        if update.cmp_claim(&kept) == Ordering::Greater {
            Member {
                address: update.address,
                incarnation: update.incarnation,
                state: update.state,
                by: update.by,
                ..kept
            }
        } else {
            kept
        }
    }

    fn key(member: &Member) -> (u64, State, Address) {
        (member.incarnation, member.state, member.address.clone())
    }

    quickcheck! {
        /// Keeping the greatest claim converges whatever the order and
        /// however often claims arrive: commutative, associative, idempotent.
        fn merging_claims_ignores_order_and_repeats(claims: Vec<Claim>, seed: u64) -> bool {
            let start = member(0, State::Alive, 1);
            let forward = claims.iter().fold(start.clone(), merge);
            let mut shuffled: Vec<&Claim> = claims.iter().chain(claims.iter()).collect();
            let len = shuffled.len();
            for i in 0..len {
                let j = (seed.wrapping_mul(i as u64 + 1).rotate_left(17) % len as u64) as usize;
                shuffled.swap(i, j);
            }
            let mixed = shuffled.into_iter().fold(start, merge);
            key(&forward) == key(&mixed)
        }
    }
}
