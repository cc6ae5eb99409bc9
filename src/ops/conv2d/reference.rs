//! The f64 oracle of the convolution and of its backward ([`super::backward`]): direct loops,
//! written for clarity.
