//! OpenAPI schemas the derive cannot write from a field's type alone: the
//! label map (key and value bounds), a command (first argument non-empty)
//! and the shared text patterns. They state exactly the rules of the
//! request types' `problems()`, so that a client generated from the
//! document, or a fuzzer, sends what the server accepts and no more.

use super::jobs::{MAX_COMMAND_ARGS, MAX_LABELS, MAX_LABEL_KEY, MAX_LABEL_VALUE};
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};

/// A text without NUL (Postgres refuses U+0000), as a JSON Schema pattern.
pub const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

/// A string schema of `min..=max` characters without NUL.
fn text(min: usize, max: Option<usize>) -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(max)
        .pattern(Some(NO_NUL_PATTERN))
        .into()
}

/// Labels: at most 64 entries, keys 1..=128 and values up to 1024
/// characters, no NUL.
pub fn labels() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(MAX_LABELS))
        .property_names(Some(text(1, Some(MAX_LABEL_KEY))))
        .additional_properties(Some(AdditionalProperties::RefOr(
            text(0, Some(MAX_LABEL_VALUE)).into(),
        )))
        .into()
}

/// A pool name (see `crate::pools::POOL_RULE`), as a JSON Schema pattern.
pub const POOL_PATTERN: &str = "^[a-z0-9][a-z0-9_-]{0,62}$";

/// A selector: at most 16 entries, keys and values by the selector rule
/// (`crate::pools::SELECTOR_RULE`).
pub fn selector() -> Schema {
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$"));
    let value = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^[A-Za-z0-9_.-]{0,63}$"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(crate::pools::MAX_SELECTOR))
        .property_names(Some(key))
        .additional_properties(Some(AdditionalProperties::RefOr(Schema::from(value).into())))
        .into()
}

/// An agent's pools: at most 16 pool names.
pub fn pools() -> Schema {
    let pool = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(POOL_PATTERN));
    ArrayBuilder::new()
        .max_items(Some(crate::pools::MAX_POOLS))
        .items(pool)
        .into()
}

/// One scope: a string among the scopes the API knows.
fn scope() -> ObjectBuilder {
    let names = crate::Scope::ALL.iter().map(|s| s.as_str());
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
}

/// Scopes to grant: each one of the scopes the API knows.
pub fn scopes() -> Schema {
    ArrayBuilder::new().items(scope()).into()
}

/// Scopes to set, or `null` to leave them as they are.
pub fn optional_scopes() -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(scope())
        .into()
}

/// A command: 1..=4096 arguments without NUL, the first non-empty; or
/// `null` (none: the agent's executor runs the task).
pub fn command() -> Schema {
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .min_items(Some(1))
        .max_items(Some(MAX_COMMAND_ARGS))
        .prefix_items([text(1, None)])
        .items(utoipa::openapi::RefOr::T(text(0, None)))
        .into()
}

/// A schedule's job template: a submission's schema without
/// `idempotency_key`, which a template may not hold (each tick is a new
/// job). Built from the submission's own schema, so the two never differ
/// otherwise.
pub fn template() -> utoipa::openapi::RefOr<Schema> {
    use utoipa::PartialSchema;
    let mut schema = super::jobs::SubmitRequest::schema();
    if let utoipa::openapi::RefOr::T(Schema::Object(object)) = &mut schema {
        object.properties.remove("idempotency_key");
        object.description = Some("The body of POST /api/jobs/submit, without idempotency_key.".to_owned());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_is_a_submission_without_its_idempotency_key() {
        let json = serde_json::to_value(template()).unwrap();
        let properties = json["properties"].as_object().unwrap();
        assert!(properties.contains_key("task_description"), "{json}");
        assert!(properties.contains_key("labels"), "{json}");
        assert!(!properties.contains_key("idempotency_key"), "{json}");
        assert_eq!(json["required"], serde_json::json!(["task_description"]));
    }
}
