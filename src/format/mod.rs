//! The object format (to be written).
