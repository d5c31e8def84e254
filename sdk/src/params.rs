//! The parameters of the export configuration a script runs for.
//!
//! Parameters are strings set by the admin on the configuration; these
//! helpers read and parse them with errors that name the parameter.

use std::str::FromStr;

use crate::{Error, host};

/// The value of a parameter, if set.
pub fn get(name: &str) -> Option<String> {
    host::param(name)
}

/// The value of a parameter, or an error naming it when it is not set.
pub fn require(name: &str) -> Result<String, Error> {
    get(name).ok_or_else(|| Error::msg(format!("parameter `{name}` is not set")))
}

/// A parameter parsed into `T`; `Ok(None)` when it is not set.
pub fn parse<T>(name: &str) -> Result<Option<T>, Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(None),
        Some(raw) => raw.trim().parse().map(Some).map_err(|e| Error::msg(format!("parameter `{name}` = {raw:?} is invalid: {e}"))),
    }
}

/// A comma-separated parameter as a list of trimmed, non-empty items.
pub fn list(name: &str) -> Vec<String> {
    get(name).map(|raw| raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default()
}

/// All parameters, sorted by name.
pub fn all() -> Vec<(String, String)> {
    host::params()
}
