//! How this store presents itself to the original element's clients: the
//! identity its Admin Module's discovery (`/api/v1/info`) and its
//! Ingester's capacity monitor (`/api/v1/capacity`) read.

/// The element's identity in the original's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    /// The service-discovery id (`element_id`, and `storage_id` in
    /// `/api/v1/capacity`).
    pub element_id: String,
    /// A name for people.
    pub display_name: String,
    /// Lower fills first; the original's default was 100.
    pub priority: i64,
    /// A location label (a datacenter).
    pub location: String,
    /// Where content lives: `local` (or `s3`).
    pub storage_type: String,
}

impl Element {
    /// The identity of an element named `name` (the API's name), with the
    /// original's defaults.
    pub fn named(name: &str) -> Element {
        Element {
            element_id: name.to_string(),
            display_name: name.to_string(),
            priority: 100,
            location: "default".to_string(),
            storage_type: "local".to_string(),
        }
    }
}
