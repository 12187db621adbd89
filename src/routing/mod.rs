//! routing (work in progress)
