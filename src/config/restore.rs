//! What the configuration says about restores: the `DEFINER` handling
//! (`RESTORE_DEFINER`). The type is defined here, below both the
//! configuration and [`crate::restore::definer`] (which re-exports it and
//! holds its parsing and the rewriting).

/// What to do with `DEFINER` clauses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Definer {
    /// Restore them as dumped.
    #[default]
    Keep,
    /// Remove them: objects belong to the restoring user.
    Strip,
    /// Replace them with `DEFINER=CURRENT_USER`.
    Rewrite,
}
