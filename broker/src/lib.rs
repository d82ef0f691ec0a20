//! claudemesh broker (work in progress).
