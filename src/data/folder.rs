//! (data source `folder`: see [`super`])
