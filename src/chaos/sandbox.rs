//! The Rhai sandbox: a hardened engine (operation, depth and size limits, no `eval`, no modules),
//! compilation with the script size limit, and script errors with line and column. Nothing here
//! knows the script API.

use rhai::{AST, Engine, EvalAltResult};

use super::report::ScriptError;

/// Largest script accepted, in bytes.
pub const MAX_SCRIPT_BYTES: usize = 64 * 1024;
/// Operations a run may execute in all (a runaway loop hits this in well under a second).
pub const MAX_OPERATIONS: u64 = 1_000_000;
/// Nested function calls.
pub const MAX_CALL_LEVELS: usize = 32;
pub const MAX_STRING_SIZE: usize = 64 * 1024;
pub const MAX_ARRAY_SIZE: usize = 10_000;
pub const MAX_MAP_SIZE: usize = 10_000;

/// A hardened engine with no script API: used to compile, and as the base of a run's engine.
pub fn sandbox() -> Engine {
    let mut e = Engine::new();
    e.set_max_operations(MAX_OPERATIONS)
        .set_max_call_levels(MAX_CALL_LEVELS)
        .set_max_expr_depths(64, 32)
        .set_max_string_size(MAX_STRING_SIZE)
        .set_max_array_size(MAX_ARRAY_SIZE)
        .set_max_map_size(MAX_MAP_SIZE)
        .set_max_variables(256)
        .set_max_functions(64)
        .set_max_modules(0)
        .set_strict_variables(true);
    e.disable_symbol("eval");
    e
}

/// Compiles a script, with the size limit; errors carry line and column.
pub fn compile(source: &str) -> Result<AST, ScriptError> {
    if source.len() > MAX_SCRIPT_BYTES {
        return Err(ScriptError {
            message: format!("script is {} bytes; the limit is {MAX_SCRIPT_BYTES} bytes", source.len()),
            line: None,
            column: None,
        });
    }
    sandbox().compile(source).map_err(|e| ScriptError {
        message: e.err_type().to_string(),
        line: e.position().line(),
        column: e.position().position(),
    })
}

pub fn script_error(e: &EvalAltResult) -> ScriptError {
    let pos = e.position();
    let message = match e {
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("sandbox limit: the script ran more than {MAX_OPERATIONS} operations (a runaway loop?)")
        }
        EvalAltResult::ErrorStackOverflow(_) => {
            format!("sandbox limit: calls nested deeper than {MAX_CALL_LEVELS} levels (runaway recursion?)")
        }
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "sandbox limit: {what} exceeds the limit (strings {MAX_STRING_SIZE} bytes, arrays {MAX_ARRAY_SIZE} items, maps {MAX_MAP_SIZE} entries)"
        ),
        other => {
            let mut m = other.to_string();
            // The position is reported in its own fields.
            if let Some(i) = m.rfind(" (line ") {
                m.truncate(i);
            }
            m
        }
    };
    ScriptError { message, line: pos.line(), column: pos.position() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_errors_have_positions_and_size_is_capped() {
        let e = compile("let x = 1;\nlet = 2;").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = compile(&"x".repeat(MAX_SCRIPT_BYTES + 1)).unwrap_err();
        assert!(e.message.contains("the limit is 65536 bytes"));
    }
}
