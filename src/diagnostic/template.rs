//! Template (Handlebars) errors in words a user of vigil reads: the template engine's own
//! messages name its grammar's rules (`expected trailing_tilde_to_omit_whitespace`) and
//! print Rust values (`Some("group.src.ipp")`).

use handlebars::{RenderError, RenderErrorReason, TemplateError, TemplateErrorReason};

/// Why a template does not parse.
pub fn syntax_reason(e: &TemplateError) -> String {
    match e.reason() {
        TemplateErrorReason::InvalidSyntax(msg) => syntax_message(msg),
        TemplateErrorReason::MismatchingClosedHelper(open, close)
        | TemplateErrorReason::MismatchingClosedDecorator(open, close) => format!(
            "`{{{{#{open}}}}}` is closed by `{{{{/{close}}}}}`: close it with `{{{{/{open}}}}}`"
        ),
        TemplateErrorReason::InvalidParam(p) => format!("`{p}` is not a valid parameter"),
        TemplateErrorReason::NestedSubexpression => {
            "a `( … )` inside another `( … )` is not supported".to_string()
        }
        other => other.to_string(),
    }
}

/// Why a template does not render.
pub fn render_reason(e: &RenderError) -> String {
    match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("`{path}` does not exist"),
        RenderErrorReason::MissingVariable(None) => "a variable it uses does not exist".into(),
        RenderErrorReason::HelperNotFound(name) => {
            format!("`{name}` is neither a variable nor a helper")
        }
        RenderErrorReason::TemplateError(t) => syntax_reason(t),
        RenderErrorReason::ParamNotFoundForIndex(helper, i) => {
            format!(
                "the helper `{helper}` needs a parameter at position {}",
                i + 1
            )
        }
        RenderErrorReason::ParamNotFoundForName(helper, name) => {
            format!("the helper `{helper}` needs a parameter `{name}`")
        }
        other => other.to_string(),
    }
}

/// A grammar message (`expected identifier, subexpression, or path_inline`) in words.
fn syntax_message(msg: &str) -> String {
    let (unexpected, expected) = match msg.split_once("; expected ") {
        Some((u, e)) => (u.strip_prefix("unexpected ").map(str::trim), Some(e)),
        None => match msg.strip_prefix("expected ") {
            Some(e) => (None, Some(e)),
            None => match msg.strip_prefix("unexpected ") {
                Some(u) => (Some(u), None),
                // Not the grammar's words: a message of its own.
                None => return format!("invalid template syntax: {msg}"),
            },
        },
    };
    let mut phrases: Vec<&str> = Vec::new();
    let mut open_block = false;
    for rule in expected
        .into_iter()
        .flat_map(|e| e.split(", "))
        .map(|r| r.trim().trim_start_matches("or ").trim())
        .filter(|r| !r.is_empty())
    {
        let phrase = match rule {
            "identifier"
            | "opt_identifier"
            | "path_inline"
            | "reference"
            | "name"
            | "path_id"
            | "partial_identifier"
            | "opt_partial_identifier"
            | "leading_tilde_to_omit_whitespace" => "a variable or helper name",
            "helper_parameter" | "hash" | "literal" | "string_literal" | "number_literal"
            | "boolean_literal" | "null_literal" | "array_literal" | "object_literal" => {
                "a parameter"
            }
            "subexpression" => "`(`",
            "trailing_tilde_to_omit_whitespace" => "the closing braces",
            "block_param" => "`as |name|`",
            "helper_block_end" | "decorator_block_end" | "partial_block_end" => {
                open_block = true;
                continue;
            }
            "escape"
            | "expression"
            | "html_expression"
            | "decorator_expression"
            | "partial_expression"
            | "invert_tag"
            | "invert_chain_tag"
            | "helper_block_start"
            | "decorator_block_start"
            | "partial_block_start"
            | "raw_block_start"
            | "hbs_comment"
            | "hbs_comment_compact"
            | "raw_text"
            | "template" => {
                open_block = true;
                continue;
            }
            _ => "something else",
        };
        if !phrases.contains(&phrase) {
            phrases.push(phrase);
        }
    }
    if phrases.is_empty() && open_block {
        return "a block opened with `{{#…}}` is not closed: end it with `{{/…}}`".into();
    }
    let mut out = String::from("invalid template syntax");
    if let Some(u) = unexpected.filter(|u| !u.contains('_')) {
        out.push_str(&format!(": unexpected {u}"));
    }
    if !phrases.is_empty() {
        out.push_str(if out.contains(':') {
            "; expected "
        } else {
            ": expected "
        });
        out.push_str(&join_or(&phrases));
    }
    if phrases.contains(&"the closing braces") {
        out.push_str(" (`{{…}}` and `{{{…}}}` must be closed by as many braces as they open)");
    }
    out
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_error(text: &str) -> String {
        let mut hb = handlebars::Handlebars::new();
        let e = hb
            .register_template_string("t", text)
            .expect_err("does not parse");
        syntax_reason(&e)
    }

    #[test]
    fn grammar_rule_names_never_reach_the_user() {
        for text in [
            "{{x}",
            "{{{x}}",
            "{{~ }}",
            "{{x ~}",
            "{{#if x}}open",
            "{{/if}}",
            "{{",
        ] {
            let m = parse_error(text);
            assert!(!m.contains('_'), "{text}: {m}");
            assert!(!m.contains("Some("), "{text}: {m}");
        }
        assert_eq!(
            parse_error("{{{x}}"),
            "invalid template syntax: expected the closing braces (`{{…}}` and `{{{…}}}` must be closed by as many braces as they open)"
        );
        assert_eq!(
            parse_error("{{#if x}}open"),
            "a block opened with `{{#…}}` is not closed: end it with `{{/…}}`"
        );
    }

    #[test]
    fn a_missing_variable_is_named_plainly() {
        let mut hb = handlebars::Handlebars::new();
        hb.set_strict_mode(true);
        let e = hb
            .render_template("{{group.src.ipp}}", &serde_json::json!({"group": {}}))
            .expect_err("strict");
        assert_eq!(render_reason(&e), "`group.src.ipp` does not exist");
    }
}
