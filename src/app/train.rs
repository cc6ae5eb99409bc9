//! `infodiff train` (see [`crate::train`]).
