//! The store's typed errors.

/// What went wrong in the store. Every variant names the store by its redacted URL (never a
/// password), so an error can go to stderr, logs and `/readyz` as it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL is not a store URL connhealth understands.
    #[error("store URL {url}: {reason}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process holds this SQLite store.
    #[error("store {store} is in use by another process (lock file {lock} is held); stop it or use another store")]
    Locked {
        /// The store.
        store: String,
        /// The lock file.
        lock: String,
    },
    /// The store was written by a newer connhealth.
    #[error("store {store} has schema version {found}, newer than the {supported} this connhealth understands; upgrade connhealth (or use another store)")]
    TooNew {
        /// The store.
        store: String,
        /// The schema version found.
        found: i64,
        /// The newest this build knows.
        supported: i64,
    },
    /// No space left (a full disk or SQLite's `max_page_count`): nothing of the failed write was
    /// kept; reads still work and writes resume once there is space.
    #[error("store {store} is full: {detail}")]
    Full {
        /// The store.
        store: String,
        /// The database's own words.
        detail: String,
    },
    /// The store is read-only (a read-only handle, file or database).
    #[error("store {store} is read-only: {detail}")]
    ReadOnly {
        /// The store.
        store: String,
        /// The database's own words.
        detail: String,
    },
    /// The database cannot be reached (PostgreSQL down, connection lost). Transient.
    #[error("store {store} is unavailable: {detail}")]
    Unavailable {
        /// The store.
        store: String,
        /// What failed.
        detail: String,
    },
    /// The integrity check failed, or the file is not a database.
    #[error("store {store} is corrupt: {detail}")]
    Corrupt {
        /// The store.
        store: String,
        /// What the check said.
        detail: String,
    },
    /// A stored row does not decode.
    #[error("store {store}: a stored {what} does not decode: {detail}")]
    Decode {
        /// The store.
        store: String,
        /// What kind of row.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A bad argument (a cursor that is not one of ours, a limit out of range).
    #[error("{0}")]
    Invalid(String),
    /// A fenced write ([`Store::commit_poll_fenced`](crate::Store::commit_poll_fenced)) was
    /// refused: `holder` no longer holds the lease `lease` (it expired, or another replica took
    /// it). Nothing of the write was kept; the caller is no longer the leader.
    #[error("store {store}: {holder:?} no longer holds the lease {lease:?}; the write was refused (another replica leads)")]
    LeaseLost {
        /// The store.
        store: String,
        /// The lease's name.
        lease: String,
        /// Who thought it held it.
        holder: String,
    },
    /// Any other database error.
    #[error("store {store}: {detail}")]
    Database {
        /// The store.
        store: String,
        /// The database's own words.
        detail: String,
    },
}

impl StoreError {
    /// Whether retrying later may succeed (full, read-only, unavailable): the caller keeps what
    /// it wanted to write and tries again.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Full { .. } | StoreError::ReadOnly { .. } | StoreError::Unavailable { .. }
        )
    }

    /// A short stable code for metrics and `/readyz` warnings.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::BadUrl { .. } => "store_bad_url",
            StoreError::Locked { .. } => "store_locked",
            StoreError::TooNew { .. } => "store_too_new",
            StoreError::Full { .. } => "store_full",
            StoreError::ReadOnly { .. } => "store_read_only",
            StoreError::Unavailable { .. } => "store_unavailable",
            StoreError::Corrupt { .. } => "store_corrupt",
            StoreError::Decode { .. } => "store_decode",
            StoreError::Invalid(_) => "store_invalid_argument",
            StoreError::LeaseLost { .. } => "store_lease_lost",
            StoreError::Database { .. } => "store_error",
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
