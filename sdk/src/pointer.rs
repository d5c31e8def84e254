//! Reads one value at a JSON pointer straight from the payload text, without
//! building the whole document: everything off the path is skipped by the
//! parser. In wasm, where every instruction counts against the script's
//! budget, this is several times cheaper than parsing into a `Value`.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The value at `pointer` (RFC 6901) in `json`, deserialized as `T`;
/// `Ok(None)` when the path is absent or leads to `null`.
pub(crate) fn lookup<T: DeserializeOwned>(json: &str, pointer: &str) -> Result<Option<T>, String> {
    let tokens = parse(pointer)?;
    let mut de = serde_json::Deserializer::from_str(json);
    let found = Seek::<T> { tokens: &tokens, value: PhantomData }.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(found)
}

fn parse(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer.strip_prefix('/').ok_or_else(|| format!("JSON pointer {pointer:?} must start with `/`"))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

struct Seek<'a, T> {
    tokens: &'a [String],
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for Seek<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        match self.tokens.split_first() {
            None => Option::<T>::deserialize(deserializer),
            Some((token, rest)) => deserializer.deserialize_any(Step::<T> { token, rest, value: PhantomData }),
        }
    }
}

/// One step down the path: into the member named `token`, or the element
/// at index `token`.
struct Step<'a, T> {
    token: &'a str,
    rest: &'a [String],
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Step<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.token))? {
            if matches && found.is_none() {
                found = map.next_value_seed(Seek::<T> { tokens: self.rest, value: PhantomData })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<T>, A::Error> {
        let index = self.token.parse::<usize>().ok();
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(Seek::<T> { tokens: self.rest, value: PhantomData })? {
                    Some(value) => found = value,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }

    // A scalar has no members: the path does not exist.
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
}

/// Compares an object key with the wanted one without allocating.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::lookup;

    #[test]
    fn agrees_with_value_pointer() {
        let doc = json!({"a": {"b/c": [1, {"d": "x"}, null], "m~n": true}, "n": null, "s": "t"});
        let text = doc.to_string();
        for pointer in ["", "/a", "/a/b~1c", "/a/b~1c/1/d", "/a/b~1c/2", "/a/b~1c/9", "/a/m~0n", "/n", "/s/x", "/zz", "/a/b~1c/x"] {
            let expected = doc.pointer(pointer).filter(|v| !v.is_null()).cloned();
            assert_eq!(lookup::<Value>(&text, pointer).unwrap(), expected, "{pointer}");
        }
    }

    #[test]
    fn reports_bad_json_and_bad_pointer() {
        assert!(lookup::<Value>("{\"a\":", "/a").is_err());
        assert!(lookup::<Value>("{}", "a").is_err());
        assert!(lookup::<u32>(r#"{"a":"x"}"#, "/a").is_err());
    }
}
