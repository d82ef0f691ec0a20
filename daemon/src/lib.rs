//! claudemesh daemon (work in progress).
