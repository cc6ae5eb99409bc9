//! (data source `shapes`: see [`super`])
