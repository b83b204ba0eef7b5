//! Word expansion must never panic: the first byte picks the escape token and options, the rest is the
//! word, expanded against a small fixed environment.
#![no_main]

use std::collections::BTreeMap;

use frontend::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Ok(word) = std::str::from_utf8(rest) else { return };
    let escape = if flags & 1 == 0 { '\\' } else { '`' };
    let lexer =
        Lexer::new(escape).raw_quotes(flags & 2 != 0).raw_escapes(flags & 4 != 0).skip_unset_env(flags & 8 != 0);
    let env: BTreeMap<String, String> = [("PWD", "/home"), ("EMPTY", ""), ("SPACE", "a b  c"), ("K", "한국어")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = lexer.process_word(word, &env);
    let _ = lexer.process_words(word, &env);
});
