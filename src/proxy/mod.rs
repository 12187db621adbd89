//! proxy (work in progress)
