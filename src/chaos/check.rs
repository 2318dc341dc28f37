//! Static checks of a script before anything runs it: its header, its compile, and calls to
//! functions that neither the script API, Rhai's standard library nor the script defines (Rhai
//! only finds those at run time, possibly after faults were applied). Used by `chaos-lab check`
//! and `POST /chaos/check` (the console checks a pasted script with it).

use rhai::{ASTNode, Expr, Stmt};

use super::report::ScriptError;
use super::{catalog, sandbox, script_api};

/// Every problem of `source`, in the order found (empty when it is clean). A scenario file must
/// also have a `//! description:` line; a pasted script needs no header.
pub fn check(source: &str, scenario_file: bool) -> Vec<ScriptError> {
    let mut problems = Vec::new();
    let at = |line, column, message: String| ScriptError { message, line: Some(line), column: Some(column) };
    match catalog::parse_header(source) {
        Ok(h) if scenario_file && h.description.is_none() => {
            problems.push(at(1, 1, "header has no '//! description: …' line".into()))
        }
        Ok(_) => {}
        Err(e) => problems.push(e),
    }
    match sandbox::compile(source) {
        Err(e) => problems.push(e),
        Ok(ast) => {
            for (name, pos) in unknown_functions(&ast) {
                problems.push(ScriptError {
                    message: format!("unknown function '{name}'"),
                    line: pos.line(),
                    column: pos.position(),
                });
            }
        }
    }
    problems
}

fn unknown_functions(ast: &rhai::AST) -> Vec<(String, rhai::Position)> {
    let mut known: std::collections::HashSet<String> = script_api::known_functions().iter().cloned().collect();
    known.extend(ast.iter_functions().map(|f| f.name.to_string()));
    for kw in ["Fn", "call", "curry", "type_of", "print", "debug", "is_def_var", "is_def_fn", "is_shared"] {
        known.insert(kw.into());
    }
    let mut unknown = Vec::new();
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos))) | Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => {
                Some((call, pos))
            }
            _ => None,
        };
        if let Some((call, pos)) = call {
            let n = call.name.as_str();
            let is_ident = n.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_');
            if is_ident && !call.is_qualified() && !known.contains(n) {
                unknown.push((n.to_string(), *pos));
            }
        }
        true
    });
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_have_positions() {
        assert!(check("sleep(0.1);\nlog(\"x\");", false).is_empty());
        let p = check("sleep(0.1);\nnetwork_blok();", false);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!((p[0].line, p[0].message.as_str()), (Some(2), "unknown function 'network_blok'"));
        let p = check("let = 1;", false);
        assert_eq!(p[0].line, Some(1));
        assert!(check("sleep(1);", true)[0].message.contains("no '//! description"));
    }

    #[test]
    fn the_known_functions_are_the_registered_ones() {
        let known = script_api::known_functions();
        for f in ["network_block", "loadgen_wait", "on_rollback", "deploy_fault", "wait_until", "to_upper"] {
            assert!(known.contains(f), "{f} is registered: {known:?}");
        }
        assert!(check("network_block();\nloadgen_stop(\"loadgen-1\");\nlet t = now();", false).is_empty());
    }
}
