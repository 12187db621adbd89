//! pki (work in progress)
