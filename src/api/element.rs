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

/// Longest `element_id` and `location`, in characters.
pub const ID_MAX: usize = 128;
/// Longest `display_name`, in characters.
pub const NAME_MAX: usize = 256;

/// Check one text knob: not blank, no control characters, at most `max`
/// characters (the original's clients show these and use the id as a key).
fn check_text(knob: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{knob} is empty"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{knob} {value:?} has a control character"));
    }
    let n = value.chars().count();
    if n > max {
        return Err(format!("{knob} is {n} characters long, at most {max}"));
    }
    Ok(())
}

impl Element {
    /// Refuse what no client could use: a blank or overlong id, name or
    /// location, a priority outside 0..=2^31-1 (the original's clients
    /// keep it in a 32-bit integer).
    pub fn check(&self) -> Result<(), String> {
        check_text(
            "--api-element-id (element_id, default --api-name)",
            &self.element_id,
            ID_MAX,
        )?;
        check_text(
            "--api-display-name (display_name, default --api-name)",
            &self.display_name,
            NAME_MAX,
        )?;
        check_text("--api-location (location)", &self.location, ID_MAX)?;
        if !(0..=i64::from(i32::MAX)).contains(&self.priority) {
            return Err(format!(
                "--api-priority (priority) {} is outside 0..={}",
                self.priority,
                i32::MAX
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_are_checked() {
        assert_eq!(Element::named("se-01").check(), Ok(()));
        let bad = |f: &dyn Fn(&mut Element)| {
            let mut e = Element::named("se-01");
            f(&mut e);
            e.check().unwrap_err()
        };
        assert!(bad(&|e| e.element_id = " ".into()).contains("empty"));
        assert!(bad(&|e| e.element_id = "x".repeat(ID_MAX + 1)).contains("at most 128"));
        assert!(bad(&|e| e.display_name = "a\nb".into()).contains("control"));
        assert!(bad(&|e| e.location = String::new()).contains("location"));
        assert!(bad(&|e| e.priority = -1).contains("outside"));
        assert!(bad(&|e| e.priority = 1 << 31).contains("outside"));
        let mut ok = Element::named("Склад 1");
        ok.priority = 0;
        ok.display_name = "é".repeat(NAME_MAX);
        assert_eq!(ok.check(), Ok(()));
    }
}
