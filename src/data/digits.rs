//! (data source `digits`: see [`super`])
