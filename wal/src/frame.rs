//! The record frame shared by every WAL backend. (To be written: layout, encode, decode.)
