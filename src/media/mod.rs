//! media (work in progress)
