//! txn (work in progress)
