//! Every Postgres advisory lock the controller takes, with its key. The
//! keys share one space in the database: two uses with the same key would
//! serialise (or, for a `try` lock, exclude) each other without anyone
//! meaning it. As the discriminants of one enum they cannot collide: the
//! compiler refuses two equal ones. The values must never change either:
//! during a rolling upgrade, replicas of two versions must take the same
//! key for the same lock.

/// An advisory lock, its key the discriminant (ASCII of its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i64)]
pub enum AdvisoryLock {
    /// The reaper's leadership ("REAPER"), held by a session while it leads.
    ReaperLeader = 0x5245_4150_4552,
    /// Held, for its transaction, by the one relay that may publish
    /// messages other than dispatches, so that they go out in the order
    /// written ("CONTROL").
    OrderedPublish = 0x0043_4f4e_5452_4f4c,
    /// Serialises the changes that can take an admin away, so that the
    /// last-admin check sees every concurrent one ("USERS").
    AdminChange = 0x0055_5345_5253,
    /// Serialises allocations, so that quota checks see each other
    /// ("ALLOC").
    Allocation = 0x0041_4c4c_4f43,
}

impl AdvisoryLock {
    /// The key to pass to `pg_advisory_*lock`.
    pub const fn key(self) -> i64 {
        self as i64
    }
}

#[cfg(test)]
mod tests {
    use super::AdvisoryLock;

    #[test]
    fn keys_keep_the_values_deployed_replicas_use() {
        // Changing one would let an old and a new replica both take "the"
        // lock during a rolling upgrade.
        assert_eq!(AdvisoryLock::ReaperLeader.key(), 0x5245_4150_4552);
        assert_eq!(AdvisoryLock::OrderedPublish.key(), 0x0043_4f4e_5452_4f4c);
        assert_eq!(AdvisoryLock::AdminChange.key(), 0x0055_5345_5253);
        assert_eq!(AdvisoryLock::Allocation.key(), 0x0041_4c4c_4f43);
    }
}
