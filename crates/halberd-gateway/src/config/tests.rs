use super::*;

fn build(text: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| (k == "TEST_KEY").then(|| "sk-test".to_owned());
    ConfigFile::parse(text)?.build(Path::new("/tmp/base"), &env)
}

#[test]
fn empty_file_is_the_embedded_default() {
    let c = build("").unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8787");
    assert_eq!(c.admin_listen.to_string(), "127.0.0.1:8788");
    assert_eq!(c.limits.max_body_bytes, 8 * 1024 * 1024);
    assert_eq!(c.store_path, Path::new("/tmp/base/halberd.db"));
    assert_eq!(c.pepper_file, Path::new("/tmp/base/halberd.pepper"));
    assert_eq!(c.providers.len(), 1);
    assert_eq!(c.providers[0].kind, ProviderKind::Mock);
    assert!(c.models.iter().any(|m| m.matches("mock-anything")));
    assert!(!c.models.iter().any(|m| m.matches("gpt-4o")));
}

#[test]
fn providers_and_models() {
    let c = build(
        r#"
        [[providers]]
        name = "oai"
        kind = "openai"
        api_key_env = "TEST_KEY"
        [[models]]
        name = "gpt-4o"
        provider = "oai"
        upstream = "gpt-4o-2024-08-06"
        "#,
    )
    .unwrap();
    assert_eq!(
        c.providers[0].base_url.as_deref(),
        Some("https://api.openai.com/v1")
    );
    assert_eq!(c.models[0].upstream.as_deref(), Some("gpt-4o-2024-08-06"));
}

#[test]
fn errors_say_where() {
    let check = |text: &str, at: &str, needle: &str| {
        let e = build(text).unwrap_err();
        assert!(
            e.at.contains(at) && e.message.contains(needle),
            "{e} (wanted {at}: ..{needle}..)"
        );
    };
    check(
        "[server]\nlisten = \"nope\"",
        "server.listen",
        "not an address",
    );
    check("[server]\nlisten_typo = 1", "line 2", "unknown field");
    check(
        "[server]\nheader_read_timeout = \"10 parsecs\"",
        "server.header_read_timeout",
        "unit",
    );
    check(
        "[server]\nmax_json_depth = 1000",
        "server.max_json_depth",
        "at most 128",
    );
    check(
        "[server]\nmax_body_bytes = 10",
        "server.max_body_bytes",
        "at least",
    );
    check(
        "[[providers]]\nname = \"x\"\nkind = \"openai\"\nbase_url = \"http://10.0.0.1\"",
        "providers[0].base_url",
        "https",
    );
    check(
        "[[providers]]\nname = \"x\"\nkind = \"openai\"\napi_key_env = \"MISSING\"",
        "providers[0].api_key_env",
        "MISSING is not set",
    );
    check(
        "[[providers]]\nname = \"x\"\nkind = \"openai\"",
        "providers[0]",
        "api_key",
    );
    check(
        "[[providers]]\nname = \"x\"\nkind = \"gemini\"",
        "line",
        "unknown variant",
    );
    check(
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[[models]]\nname = \"a\"\nprovider = \"nope\"",
        "models[0].provider",
        "no provider named",
    );
    check(
        "[[providers]]\nname = \"m\"\nkind = \"mock\"",
        "models",
        "no models",
    );
    check(
        "[[providers]]\nname = \"m\"\nkind = \"mock\"\n[[models]]\nname = \"a*b*\"\nprovider = \"m\"",
        "models[0].name",
        "single '*'",
    );
}

#[test]
fn plain_http_needs_opt_in() {
    let c = build("[[providers]]\nname = \"local\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9000/v1/\"\nallow_http = true\n[[models]]\nname = \"llama\"\nprovider = \"local\"").unwrap();
    assert_eq!(
        c.providers[0].base_url.as_deref(),
        Some("http://127.0.0.1:9000/v1")
    );
}

/// Every TOML snippet in `docs/` is a configuration that builds (a snippet
/// that opens with a policy's sub-table gets a `[[policies]]` header).
#[test]
fn every_toml_snippet_in_the_docs_builds() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for block in text.split("```toml\n").skip(1) {
            let snippet = block.split("```").next().unwrap();
            let config = if snippet.trim_start().starts_with("[policies.") {
                format!("[[policies]]\nname = \"doc\"\n{snippet}")
            } else {
                snippet.to_owned()
            };
            if let Err(e) = build(&config) {
                panic!("{}: snippet does not build: {e}\n{snippet}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} snippets");
}

#[test]
fn example_config_documents_every_field_and_builds() {
    let text = include_str!("../../../../config/halberd.example.toml");
    let env = |var: &str| {
        (var != "HALBERD_STORE_URL" && var != "HALBERD_REDIS_URL").then(|| "sk-x".to_owned())
    };
    let file = ConfigFile::parse(text).unwrap();
    let config = file.build(Path::new("/tmp"), &env).unwrap();
    assert!(config.providers.len() >= 3);
    assert!(config.policies.contains_key("audit-only"));
    let fields = [
        "listen",
        "admin_listen",
        "max_body_bytes",
        "max_header_bytes",
        "max_headers",
        "header_read_timeout",
        "max_json_depth",
        "max_connections",
        "shutdown_grace",
        "path",
        "pepper_file",
        "admin_token_env",
        "name",
        "kind",
        "base_url",
        "api_key_env",
        "api_key_file",
        "allow_http",
        "mock_headers",
        "connect_timeout",
        "first_byte_timeout",
        "idle_timeout",
        "total_timeout",
        "provider",
        "upstream",
        "input",
        "output",
        "hash_key_env",
        "redis_url",
        "replicas",
        "rate_fail_mode",
        "redis_timeout",
        "max_output_tokens",
        "budget_fail_mode",
        "url",
        "rpm",
        "max_concurrent",
        "budget_usd_daily",
        "max_prompt_tokens",
        "max_messages",
        "max_tools",
        "max_parts",
        "max_opaque_parts",
        "max_request_bytes",
        "action",
        "user",
        "untrusted",
        "operator",
        "canary",
        "canary_leak",
        "spotlight",
        "allow",
        "deny",
        "max_calls",
        "images",
        "links",
        "unlisted",
        "html",
        "share",
        "tags",
        "bidi",
        "invisible",
    ];
    for f in fields {
        assert!(
            text.lines().any(|l| l
                .trim_start()
                .trim_start_matches("# ")
                .starts_with(&format!("{f} ="))),
            "field {f} is not in the example config"
        );
    }
    // The documented server defaults are the real defaults.
    let d = ConfigFile::default()
        .build(Path::new("/tmp"), &env)
        .unwrap();
    assert_eq!(d.limits.max_body_bytes, config.limits.max_body_bytes);
    assert_eq!(
        d.limits.header_read_timeout,
        config.limits.header_read_timeout
    );
    assert_eq!(d.limits.max_connections, config.limits.max_connections);
}

#[test]
fn policies_are_validated_where_they_are_written() {
    let cases = [
        (
            "[[policies]]\nname = \"p\"\n[policies.sensitive]\ninput = { emails = \"redact\" }",
            "policies[0].sensitive.input.emails",
        ),
        (
            "[[policies]]\nname = \"p\"\n[policies.sensitive]\ninput = { email = \"erase\" }",
            "policies[0].sensitive.input.email",
        ),
        (
            "[[policies]]\nname = \"p\"\n[policies.sensitive]\noutput = { email = \"pseudonymize\" }",
            "policies[0].sensitive.output.email",
        ),
        (
            "[[policies]]\nname = \"p\"\n[policies.sensitive]\ninput = { \"secret:nope\" = \"block\" }",
            "policies[0].sensitive.input.secret:nope",
        ),
        (
            "[[policies]]\nname = \"p\"\n[[policies]]\nname = \"p\"",
            "policies[1].name",
        ),
        (
            "[[policies]]\nname = \"p\"\n[policies.sensitive]\nhash_key_env = \"HALBERD_TEST_UNSET_VAR\"",
            "policies[0].sensitive.hash_key_env",
        ),
    ];
    for (text, at) in cases {
        let e = ConfigFile::parse(text)
            .unwrap()
            .build(Path::new("/tmp"), &|_| None)
            .unwrap_err();
        assert_eq!(e.at, at, "{text}: {e}");
    }
    let c = build("[[policies]]\nname = \"strict\"\n[policies.sensitive]\ninput = { default = \"block\", email = \"off\" }").unwrap();
    assert!(
        c.policies.contains_key("default"),
        "the built-in default is always there"
    );
    let strict = &c.policies["strict"];
    use halberd_guard::sensitive::{Action, Kind};
    assert_eq!(strict.sensitive_input.action(Kind::Email), Action::Off);
    assert_eq!(strict.sensitive_input.action(Kind::Jwt), Action::Block);
    assert_eq!(strict.sensitive_output.action(Kind::Jwt), Action::Redact);
}

#[test]
fn limits_section_is_validated() {
    let cases = [
        ("[limits]\nredis_url = \"http://x\"", "limits.redis_url"),
        ("[limits]\nreplicas = 0", "limits.replicas"),
        (
            "[limits]\nrate_fail_mode = \"maybe\"",
            "limits.rate_fail_mode",
        ),
        ("[limits]\nredis_timeout = \"0s\"", "limits.redis_timeout"),
    ];
    for (text, at) in cases {
        let e = build(text).unwrap_err();
        assert_eq!(e.at, at, "{text}: {e}");
    }
    let c = build("[limits]\nredis_url = \"redis://127.0.0.1:6379\"\nreplicas = 3\nrate_fail_mode = \"closed\"").unwrap();
    assert_eq!(c.rate_limits.replicas, 3);
    assert_eq!(
        c.rate_limits.fail_mode,
        crate::pipeline::admit::FailMode::Closed
    );
}

#[test]
fn injection_policy_defaults_overrides_and_errors() {
    use halberd_guard::injection::{Thresholds, Trust, default_thresholds};
    let c = build("").unwrap();
    let default = &c.policies["default"].injection;
    assert!(default.enabled);
    assert_eq!(default.user, default_thresholds(Trust::User));

    let c = build("[[policies]]\nname = \"p\"\n[policies.injection]\nuser = { flag = 0.4 }\nuntrusted = { block = 0.6, flag = 0.3 }").unwrap();
    let p = &c.policies["p"].injection;
    assert_eq!(p.user.flag, Some(0.4));
    assert_eq!(p.user.block, default_thresholds(Trust::User).block);
    assert_eq!(
        p.untrusted,
        Thresholds {
            flag: Some(0.3),
            block: Some(0.6)
        }
    );

    // `flag` never blocks, and flags whatever would have been blocked.
    let c = build("[[policies]]\nname = \"p\"\n[policies.injection]\naction = \"flag\"\nuser = { flag = 0.99, block = 0.9 }").unwrap_err();
    assert!(c.to_string().contains("flag threshold"), "{c}");
    let c = build("[[policies]]\nname = \"p\"\n[policies.injection]\naction = \"flag\"").unwrap();
    let p = &c.policies["p"].injection;
    assert_eq!(p.user.block, None);
    assert_eq!(p.untrusted.block, None);
    assert_eq!(p.user.flag, default_thresholds(Trust::User).flag);

    let c = build("[[policies]]\nname = \"p\"\n[policies.injection]\naction = \"off\"\n[[policies]]\nname = \"q\"\n[policies.injection]\ncanary = true\nspotlight = true").unwrap();
    assert!(!c.policies["p"].injection.enabled);
    let described = &c.describe()["policies"];
    assert_eq!(
        described["p"]["sensitive_input"]["email"], "redact",
        "{described}"
    );
    assert_eq!(described["p"]["injection"], "off", "{described}");
    assert_eq!(
        described["q"]["injection"],
        "operator flag>=0.98 block=never, user flag>=0.73 block>=0.95, untrusted flag>=0.75 block>=0.9, canary, spotlight",
        "{described}"
    );

    // Output inspection is off when every action is off and no canary is
    // planted (then nothing holds streamed text back); planting canaries turns
    // the leak check on.
    let open = "[[policies]]\nname = \"p\"\n[policies.sensitive]\noutput = { default = \"off\" }";
    let c = build(open).unwrap();
    assert!(c.policies["p"].sensitive_output.is_off());
    let c = build(&format!("{open}\n[policies.injection]\ncanary = true")).unwrap();
    assert!(!c.policies["p"].sensitive_output.is_off());
    let c = build(&format!(
        "{open}\n[policies.injection]\ncanary = true\naction = \"off\""
    ))
    .unwrap();
    assert!(c.policies["p"].sensitive_output.is_off());

    for (text, needle) in [
        ("action = \"maybe\"", "policies[0].injection.action"),
        ("user = { flag = 1.5 }", "policies[0].injection.user.flag"),
        (
            "user = { flag = 0.9, block = 0.5 }",
            "policies[0].injection.user",
        ),
        ("user = { flg = 0.9 }", "flg"),
        (
            "canary_leak = \"pseudonymize\"",
            "policies[0].injection.canary_leak",
        ),
    ] {
        let e = build(&format!(
            "[[policies]]\nname = \"p\"\n[policies.injection]\n{text}"
        ))
        .unwrap_err();
        assert!(e.to_string().contains(needle), "{text}: {e}");
    }
}

#[test]
fn prices_budgets_and_policy_limits_are_read_and_validated() {
    let c = build(
        "[limits]\nbudget_fail_mode = \"open\"\n[prices]\n\"my-model\" = { input = 0.5, output = \"1.25\" }\n\"gpt-4o\" = { input = 1, output = 2, cached_input = 0.1 }\n[[policies]]\nname = \"default\"\n[policies.limits]\nrpm = 10\nbudget_usd_daily = \"2.5\"",
    )
    .unwrap();
    assert!(!c.rate_limits.budgets_fail_closed);
    let p = c.rate_limits.prices.get("my-model-v2").unwrap();
    assert_eq!(p.input, halberd_store::Usd(500_000_000));
    assert_eq!(p.output, halberd_store::Usd(1_250_000_000));
    assert_eq!(p.cached_input, p.input, "cached input defaults to input");
    assert_eq!(
        c.rate_limits.prices.get("gpt-4o").unwrap().cached_input,
        halberd_store::Usd(100_000_000),
        "the config overrides a built-in price"
    );
    assert!(
        c.rate_limits.prices.get("claude-sonnet-4-5").is_some(),
        "built-ins stay"
    );
    let limits = c.policies["default"].limits;
    assert_eq!(limits.rpm, Some(10));
    assert_eq!(
        limits.budget_usd_daily,
        Some(halberd_store::Usd(2_500_000_000))
    );
    assert!(
        ConfigFile::default()
            .build(Path::new("/tmp"), &|_| None)
            .unwrap()
            .rate_limits
            .budgets_fail_closed
    );
    for (text, at) in [
        (
            "[limits]\nbudget_fail_mode = \"local\"",
            "limits.budget_fail_mode",
        ),
        ("[store]\nurl = \"mysql://x\"", "store.url"),
    ] {
        assert_eq!(build(text).unwrap_err().at, at, "{text}");
    }
    for text in [
        "[prices]\n\"m\" = { input = -1, output = 1 }",
        "[prices]\n\"m\" = { input = \"0.0000000001\", output = 1 }",
        "[prices]\n\"m\" = { input = 1 }",
        "[[policies]]\nname = \"default\"\n[policies.limits]\nrpmm = 3",
    ] {
        assert!(build(text).is_err(), "{text} was accepted");
    }
}

#[test]
fn an_admin_api_off_loopback_needs_opt_in_and_a_long_token() {
    let on = |addr: &str, allow: bool, token: &'static str| {
        let text = format!("[server]\nadmin_listen = \"{addr}\"\nadmin_allow_public = {allow}\n");
        let env = move |k: &str| (k == "HALBERD_ADMIN_TOKEN").then(|| token.to_owned());
        ConfigFile::parse(&text)
            .unwrap()
            .build(Path::new("/tmp/base"), &env)
    };
    let long = "k3Jx9QmZp2LwVt8RbN4cYh6FdS1aGe7U";
    assert!(
        on("127.0.0.1:8788", false, "x").is_ok(),
        "loopback: as before"
    );
    assert!(on("[::1]:8788", false, "").is_ok());
    let e = on("0.0.0.0:8788", false, long).unwrap_err();
    assert_eq!(e.at, "server.admin_listen");
    assert!(e.message.contains("admin_allow_public"), "{}", e.message);
    let e = on("0.0.0.0:8788", true, "x").unwrap_err();
    assert!(e.message.contains("at least 32"), "{}", e.message);
    assert!(on("0.0.0.0:8788", true, long).is_ok());
}

#[test]
fn the_hash_action_needs_a_secret_key() {
    let with = |sensitive: &str, key: &'static str| {
        let text = format!("[[policies]]\nname = \"p\"\n[policies.sensitive]\n{sensitive}\n");
        let env = move |k: &str| (k == "HASH_KEY").then(|| key.to_owned());
        ConfigFile::parse(&text)
            .unwrap()
            .build(Path::new("/tmp/base"), &env)
    };
    let e = with("input = { default = \"hash\" }", "").unwrap_err();
    assert_eq!(e.at, "policies[0].sensitive.hash_key_env");
    let e = with(
        "output = { email = \"hash\" }\nhash_key_env = \"HASH_KEY\"",
        "short",
    )
    .unwrap_err();
    assert!(e.message.contains("at least 16"), "{}", e.message);
    assert!(
        with(
            "input = { default = \"hash\" }\nhash_key_env = \"HASH_KEY\"",
            "a-long-enough-secret-key"
        )
        .is_ok()
    );
    // No hash action, no key needed.
    assert!(with("input = { default = \"redact\" }", "").is_ok());
}

#[test]
fn redis_url_comes_from_the_environment_when_set() {
    let text = "[limits]\nredis_url = \"redis://file:6379\"";
    let with = |value: Option<&'static str>| {
        let env = move |k: &str| {
            (k == "HALBERD_REDIS_URL")
                .then_some(value)
                .flatten()
                .map(str::to_owned)
        };
        ConfigFile::parse(text)
            .unwrap()
            .build(Path::new("/tmp/base"), &env)
    };
    assert_eq!(
        with(None).unwrap().rate_limits.redis_url.as_deref(),
        Some("redis://file:6379")
    );
    assert_eq!(
        with(Some("redis://:secret@env:6380"))
            .unwrap()
            .rate_limits
            .redis_url
            .as_deref(),
        Some("redis://:secret@env:6380")
    );
    let e = with(Some("http://nope")).unwrap_err();
    assert!(e.to_string().contains("redis://"), "{e}");
}

#[test]
fn base_url_errors_say_what_is_wrong() {
    let provider = |url: &str, http: bool| {
        build(&format!(
            "[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"{url}\"\nallow_http = {http}\n[[models]]\nname = \"m\"\nprovider = \"p\""
        ))
        .map(drop)
        .unwrap_err()
        .to_string()
    };
    let e = provider("http//127.0.0.1:9000/v1", true);
    assert!(
        e.contains("not a valid URL") && !e.contains("allow_http"),
        "{e}"
    );
    let e = provider("http://127.0.0.1:9000/v1", false);
    assert!(e.contains("allow_http"), "{e}");
    let e = provider("ftp://127.0.0.1/v1", true);
    assert!(e.contains("scheme \"ftp\""), "{e}");
}

/// Credentials in a base URL would travel to the provider as basic auth
/// beside its key, and sit in the config in plain text: refused, and the
/// error does not repeat them.
#[test]
fn a_base_url_with_credentials_is_refused_without_repeating_them() {
    let e = build("[[providers]]\nname = \"p\"\nkind = \"openai\"\nbase_url = \"https://ann:hunter2@llm.example/v1\"\n[[models]]\nname = \"m\"\nprovider = \"p\"")
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("providers[0].base_url") && e.contains("must not carry credentials"),
        "{e}"
    );
    assert!(!e.contains("hunter2") && !e.contains("ann"), "{e}");
}

/// One check reports every error in the file, not only the first.
#[test]
fn every_error_is_reported_at_once() {
    let text = r#"
[server]
listen = "nowhere"
max_headers = 2
idle_timeout = "soon"
[store]
usage_queue = 0
[[providers]]
name = "a"
kind = "openai"
base_url = "ftp://x"
[[models]]
name = "m"
provider = "missing"
[[models]]
name = "m"
provider = "a"
[[policies]]
name = "p"
[policies.content]
max_output_tokens = 0
[[policies]]
name = "q"
[policies.sensitive]
input = { default = "shout" }
"#;
    let e = build(text).unwrap_err();
    let all: Vec<&str> = std::iter::once(e.at.as_str())
        .chain(e.more.iter().map(|m| m.at.as_str()))
        .collect();
    for at in [
        "server.listen",
        "server.max_headers",
        "server.idle_timeout",
        "store.usage_queue",
        "providers[0].base_url",
        "models[0].provider",
        "models[1].name",
        "policies[0].content.max_output_tokens",
        "policies[1].sensitive.input.default",
    ] {
        assert!(all.contains(&at), "{at} missing from {all:?}");
    }
    // A provider with an error of its own is not also called missing.
    assert!(!all.contains(&"models[1].provider"), "{all:?}");
    assert_eq!(e.to_string().lines().count(), all.len(), "{e}");
}

#[test]
fn sanitize_defaults_per_policy_values_and_errors() {
    use halberd_guard::sanitize::Sanitize;
    let c = build(
        r#"
        [[policies]]
        name = "strict"
        [policies.sanitize]
        invisible = "remove"
        [[policies]]
        name = "keep"
        [policies.sanitize]
        tags = "keep"
        bidi = "keep"
        "#,
    )
    .unwrap();
    let described = c.describe();
    assert_eq!(described["policies"]["default"]["sanitize"], "tags, bidi");
    assert_eq!(
        described["policies"]["strict"]["sanitize"],
        "tags, bidi, invisible"
    );
    assert_eq!(described["policies"]["keep"]["sanitize"], "off");
    assert_eq!(c.policies["default"].sanitize, Sanitize::DEFAULT);
    assert_eq!(c.policies["keep"].sanitize, Sanitize::OFF);

    let e = build(
        r#"
        [[policies]]
        name = "bad"
        [policies.sanitize]
        bidi = "strip"
        "#,
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("policies[0].sanitize.bidi"), "{text}");
    assert!(text.contains("remove or keep"), "{text}");
}

#[test]
fn link_rules_defaults_per_policy_values_and_errors() {
    let c = build(
        r#"
        [[policies]]
        name = "closed"
        [policies.links]
        allow = ["docs.example.com", "*.cdn.example.net"]
        unlisted = "strip"
        links = "block"
        html = "strip"
        "#,
    )
    .unwrap();
    let described = c.describe();
    assert_eq!(
        described["policies"]["default"]["links"],
        "images=strip links=flag unlisted=off"
    );
    assert_eq!(
        described["policies"]["closed"]["links"],
        "images=strip links=block unlisted=strip html=strip allow=docs.example.com,*.cdn.example.net"
    );
    assert!(c.policies["closed"].links.host_allowed("a.cdn.example.net"));
    for (field, value, expect) in [
        ("images", "\"remove\"", "policies[0].links.images"),
        ("html", "\"sanitize\"", "policies[0].links.html"),
        (
            "allow",
            "[\"https://docs.example.com/\"]",
            "policies[0].links.allow",
        ),
        ("allow", "[\"*\"]", "policies[0].links.allow"),
    ] {
        let e = build(&format!(
            "[[policies]]\nname = \"bad\"\n[policies.links]\n{field} = {value}\n"
        ))
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains(expect), "{field} = {value}: {text}");
    }
}

#[test]
fn prompt_leak_defaults_values_and_errors() {
    let c = build(
        r#"
        [[policies]]
        name = "strict"
        [policies.prompt_leak]
        action = "block"
        share = 0.3
        [[policies]]
        name = "quiet"
        [policies.prompt_leak]
        action = "off"
        "#,
    )
    .unwrap();
    let described = c.describe();
    assert_eq!(
        described["policies"]["default"]["prompt_leak"],
        "flag at 0.5"
    );
    assert_eq!(
        described["policies"]["strict"]["prompt_leak"],
        "block at 0.3"
    );
    assert_eq!(described["policies"]["quiet"]["prompt_leak"], "off");
    for (field, value) in [("action", "\"redact\""), ("share", "0"), ("share", "1.5")] {
        let e = build(&format!(
            "[[policies]]\nname = \"bad\"\n[policies.prompt_leak]\n{field} = {value}\n"
        ))
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!("policies[0].prompt_leak.{field}")),
            "{field} = {value}: {text}"
        );
    }
}

#[test]
fn call_rules_build_and_name_their_errors() {
    let c = build(
        r#"
        [[policies]]
        name = "agents"
        [[policies.tools.rules]]
        tools = ["http_*"]
        max_bytes = 4096
        [policies.tools.rules.arguments.url]
        hosts = ["api.example.com"]
        [[policies.tools.rules]]
        tools = ["send_email"]
        action = "flag"
        "#,
    )
    .unwrap();
    assert_eq!(
        c.describe()["policies"]["agents"]["tools"],
        "rule(http_* block max_bytes=4096 /url:hosts) rule(send_email flag)"
    );
    let e = build(
        r#"
        [[policies]]
        name = "bad"
        [[policies.tools.rules]]
        tools = ["a"]
        [[policies.tools.rules]]
        tools = ["b"]
        [policies.tools.rules.arguments.to]
        pattern = "[unclosed"
        "#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("policies[0].tools.rules[1]") && e.contains("arguments.to.pattern"),
        "{e}"
    );
}

#[test]
fn tool_rules_per_policy_and_their_errors() {
    let c = build(
        r#"
        [[policies]]
        name = "agents"
        [policies.tools]
        allow = ["lookup", "search_*"]
        deny = ["search_private*"]
        max_calls = 4
        "#,
    )
    .unwrap();
    assert!(c.policies["agents"].tools.permits("search_web"));
    assert!(!c.policies["agents"].tools.permits("shell"));
    assert!(c.policies["default"].tools.permits("shell"));
    assert_eq!(
        c.describe()["policies"]["agents"]["tools"],
        "allow=lookup,search_* deny=search_private* max_calls=4"
    );
    for (toml, at) in [
        ("max_calls = 0", "policies[0].tools.max_calls"),
        ("deny = [\"\"]", "policies[0].tools"),
    ] {
        let e = build(&format!(
            "[[policies]]\nname = \"p\"\n[policies.tools]\n{toml}\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains(at), "{e}");
    }
}
