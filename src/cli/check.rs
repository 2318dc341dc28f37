//! `chaos-lab check`: the static check of scenario scripts (see `chaos::check`), as a command
//! that prints FILE:LINE:COLUMN per problem.

use std::path::PathBuf;

/// `chaos-lab check`: prints one line per problem; returns 0 when every file is clean.
pub(super) fn check(files: &[PathBuf]) -> i32 {
    let mut problems = 0;
    for file in files {
        let name = file.display();
        let source = match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => {
                println!("{name}: cannot read: {e}");
                problems += 1;
                continue;
            }
        };
        for p in crate::chaos::check::check(&source, true) {
            println!("{name}:{}:{}: {}", p.line.unwrap_or(1), p.column.unwrap_or(1), p.message);
            problems += 1;
        }
    }
    if problems == 0 {
        println!("ok: {} file(s) checked", files.len());
        0
    } else {
        println!("{problems} problem(s)");
        1
    }
}
