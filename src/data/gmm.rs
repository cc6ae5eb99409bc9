//! (data source `gmm`: see [`super`])
