//! The process's open-files limit. A fleet holds a file descriptor per VM and per vCPU (and more
//! for their mappings), so `vmfleet` raises its soft limit to the hard one at startup.

/// This process's limit on open files after [`raise_fd_limit`]; `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit before.
    pub previous: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit (the most the soft limit can be raised to without privileges).
    pub hard: Option<u64>,
}

/// Raise this process's soft `RLIMIT_NOFILE` to its hard limit. A fleet holds a file descriptor
/// per VM and per vCPU (and more for their mappings), so 500 VMs with 2 vCPUs each need
/// thousands, far above the usual soft limit of 1024. Lowering never happens: a soft limit that
/// already equals the hard one is left alone.
pub fn raise_fd_limit() -> std::io::Result<FdLimit> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let mut limit = FdLimit {
        previous: before.current,
        soft: before.current,
        hard: before.maximum,
    };
    if before.current != before.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: before.maximum,
                maximum: before.maximum,
            },
        )?;
        limit.soft = getrlimit(Resource::Nofile).current;
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit() {
        let limit = raise_fd_limit().expect("raising the soft limit to the hard one is allowed");
        assert_eq!(limit.soft, limit.hard, "{limit:?}");
        let at_least = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        assert!(at_least(limit.soft, limit.previous), "{limit:?}");
        // Again: nothing left to raise.
        let again = raise_fd_limit().unwrap();
        assert_eq!((again.previous, again.soft), (limit.soft, limit.soft));
    }
}
