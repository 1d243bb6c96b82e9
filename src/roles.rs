//! Rows shared by role membership: the row-level security policies of the
//! sync and queue tables let a role reach the rows of the roles whose
//! privileges it has (`GRANT producer TO consumer`, docs/privileges.md).

use pgrx::prelude::*;

/// Whether the current user has the privileges of the role named
/// `role_name`, as `pg_has_role(role_name, 'USAGE')`, but false instead of an
/// error for a role that no longer exists. The policies call it for the rows
/// that `owner_role = current_user` leaves undecided: a subquery over
/// `pg_roles` there would be planned and started with every statement that
/// reads or writes the tables.
#[pg_extern(stable, strict, parallel_safe)]
pub fn has_privs_of(role_name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(role_name) else {
        return false;
    };
    // SAFETY: get_role_oid reads a NUL-terminated name and, with missing_ok,
    // returns InvalidOid for an unknown role; has_privs_of_role only reads
    // the role membership cache.
    unsafe {
        let role = pg_sys::get_role_oid(name.as_ptr(), true);
        role != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), role)
    }
}

/// Runs `f` as `role` in a security-restricted context (no SET ROLE, no
/// temp objects) and then restores the user. An error raised inside aborts
/// the (sub)transaction, which restores the user too.
pub fn as_role<R>(role: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    let (mut user, mut sec_context) = (pg_sys::InvalidOid, 0);
    // SAFETY: reads and sets the backend's current user and security
    // context, restored below.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec_context);
        pg_sys::SetUserIdAndSecContext(
            role,
            sec_context
                | pg_sys::SECURITY_LOCAL_USERID_CHANGE as std::ffi::c_int
                | pg_sys::SECURITY_RESTRICTED_OPERATION as std::ffi::c_int,
        );
    }
    let out = f();
    // SAFETY: as above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, sec_context) };
    out
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn privileges_follow_membership() {
        // Roles are not transactional per database: the test may meet them again.
        Spi::run(
            "DO $$ BEGIN
                 CREATE ROLE sg_producer; CREATE ROLE sg_consumer;
             EXCEPTION WHEN duplicate_object THEN NULL;
             END $$;
             GRANT sg_producer TO sg_consumer",
        )
        .unwrap();
        Spi::run("SET ROLE sg_consumer").unwrap();
        let q = |r: &str| {
            Spi::get_one::<bool>(&format!("SELECT syncguard.has_privs_of('{r}')"))
                .unwrap()
                .unwrap()
        };
        assert!(q("sg_producer"));
        assert!(q("sg_consumer"));
        assert!(!q("postgres"));
        assert!(!q("no role of that name"));
        Spi::run("RESET ROLE").unwrap();
    }
}
