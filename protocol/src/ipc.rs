//! The daemon<->shim frames over the local socket (see `docs/ipc.md`).
