//! The manifest (to be written).
