//! (see [`super`])
