//! Caches for objstream.
