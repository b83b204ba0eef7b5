//! The parser, the instruction layer and the conversion must never panic, whatever the bytes.
#![no_main]

use frontend::convert::{convert, ConvertOptions, OfflineResolver};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ast) = frontend::parser::parse(data) {
        let _ = frontend::parser::dump(&ast);
        let _ = frontend::instructions::parse_dockerfile(&ast);
        let _ = convert(data, &ConvertOptions::default(), &OfflineResolver);
    }
});
