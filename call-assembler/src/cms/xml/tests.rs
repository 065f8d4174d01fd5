//! Unit tests of the CMS CDR XML reader and writer.

use super::*;

fn one(xml: &str) -> CmsRecord<'_> {
    let mut b = parse_cms_xml(xml.as_bytes()).unwrap();
    assert_eq!(b.records.len(), 1);
    b.records.remove(0)
}

#[test]
fn values_are_trimmed_and_borrowed() {
    let r = one("<record type=\"x\"><call id=\"c\"><name>\n  a b \n</name></call></record>");
    assert_eq!(r.field("name"), Some("a b"));
    assert!(matches!(r.nodes[1].text, Cow::Borrowed(_)));
    assert!(matches!(r.record_type, Cow::Borrowed(_)));
}

#[test]
fn references_and_cdata_are_kept_at_the_edges() {
    let r = one(
        "<record type=\"callStart\"><call id=\"c\"><a> &#32;x&amp;y&#10; </a><b> <![CDATA[ <z> ]]> </b><c>1<!-- -->2</c></call></record>",
    );
    assert_eq!(r.field("a"), Some(" x&y\n"));
    assert_eq!(r.field("b"), Some(" <z> "));
    assert_eq!(r.field("c"), Some("12"));
}

#[test]
fn nested_paths() {
    let r = one(
        "<record type=\"callLegEnd\"><callLeg id=\"l\"><rxVideo><codec>h264</codec></rxVideo><alarm type=\"packetLoss\" durationPercentage=\"1.4\"/></callLeg></record>",
    );
    assert_eq!(r.field("rxVideo/codec"), Some("h264"));
    assert_eq!(
        r.field_node("alarm").unwrap().attr("type"),
        Some("packetLoss")
    );
    assert_eq!(r.field("codec"), None);
}

#[test]
fn errors_have_positions() {
    let cases: &[(&str, CmsXmlErrorKind, usize)] = &[
        ("", CmsXmlErrorKind::NoRoot, 0),
        ("<a/>", CmsXmlErrorKind::UnexpectedRoot("a".into()), 0),
        ("<records/><records/>", CmsXmlErrorKind::AfterRoot, 10),
        ("<records/>x", CmsXmlErrorKind::AfterRoot, 10),
        ("<records>x</records>", CmsXmlErrorKind::UnexpectedText, 9),
        (
            "<records><foo/></records>",
            CmsXmlErrorKind::UnexpectedElement("foo".into()),
            9,
        ),
        ("<record/>", CmsXmlErrorKind::MissingType, 0),
        (
            "<record type=\"a\" recordIndex=\"x\"/>",
            CmsXmlErrorKind::BadNumber {
                name: "recordIndex",
                value: "x".into(),
            },
            0,
        ),
        (
            "<record type=\"a\"><b>&foo;</b></record>",
            CmsXmlErrorKind::UnknownEntity("foo".into()),
            20,
        ),
        (
            "<!DOCTYPE x><record type=\"a\"/>",
            CmsXmlErrorKind::DocType,
            0,
        ),
    ];
    for (xml, kind, position) in cases {
        let e = parse_cms_xml(xml.as_bytes()).unwrap_err();
        assert_eq!((&e.kind, e.position), (kind, *position), "{xml}");
    }
    let e = parse_cms_xml(b"<record type=\"a\"><b></c></record>").unwrap_err();
    assert!(matches!(e.kind, CmsXmlErrorKind::Syntax(_)), "{e}");
    let e = parse_cms_xml(b"<record type=\"a\"><b>").unwrap_err();
    assert!(
        matches!(
            e.kind,
            CmsXmlErrorKind::Syntax(_) | CmsXmlErrorKind::Unbalanced(_)
        ),
        "{e}"
    );
    let e = parse_cms_xml(b"\xEF\xBB\xBF<record type=\"\xff\"/>").unwrap_err();
    assert_eq!((e.kind, e.position), (CmsXmlErrorKind::NotUtf8, 17));
    let e = parse_cms_xml(b"\xEF\xBB\xBF\xEF\xBB\xBF<record type=\"a\"/>").unwrap_err();
    assert_eq!((e.kind, e.position), (CmsXmlErrorKind::UnexpectedText, 3));
    let e = parse_cms_xml(b"\xEF\xBB\xBF<record type=\"a\"><b></c></record>").unwrap_err();
    assert!(matches!(e.kind, CmsXmlErrorKind::Syntax(_)), "{e}");
    assert_eq!(e.position, 23, "{e}");
}

#[test]
fn limits() {
    let limits = CmsXmlLimits {
        max_records: 1,
        max_depth: 4,
        max_text: 3,
    };
    let parse = |xml: &str| {
        parse_cms_xml_with(xml.as_bytes(), &limits)
            .map(|_| ())
            .map_err(|e| e.kind)
    };
    assert_eq!(
        parse("<records><record type=\"a\"/><record type=\"b\"/></records>"),
        Err(CmsXmlErrorKind::TooManyRecords(1))
    );
    assert_eq!(
        parse("<records><record type=\"a\"><b><c><d/></c></b></record></records>"),
        Err(CmsXmlErrorKind::TooDeep(4))
    );
    assert_eq!(
        parse("<record type=\"a\"><b>abcd</b></record>"),
        Err(CmsXmlErrorKind::TextTooLong(3))
    );
    assert_eq!(
        parse("<record type=\"abcd\"/>"),
        Err(CmsXmlErrorKind::TextTooLong(3))
    );
    assert_eq!(parse("<record type=\"a\"><b>abc</b></record>"), Ok(()));
}

#[test]
fn unknown_types_keep_their_raw_xml() {
    let xml = "<records session=\"s\"><record type=\"newThing\" time=\"t\"><thing id=\"1\">x</thing></record></records>";
    let b = parse_cms_xml(xml.as_bytes()).unwrap();
    let r = &b.records[0];
    assert_eq!(r.kind, CmsRecordKind::Unknown);
    assert_eq!(
        r.raw.as_deref(),
        Some("<record type=\"newThing\" time=\"t\"><thing id=\"1\">x</thing></record>")
    );
    let again = write_cms_batch(&b);
    assert_eq!(parse_cms_xml(&again).unwrap(), b);
}

#[test]
fn written_values_read_back() {
    let mut r = CmsRecord::new("callLegUpdate").with_time("2022-05-17T10:08:31Z");
    r.record_index = Some(7);
    r.nodes.push(CmsNode {
        depth: 0,
        name: "callLeg".into(),
        attrs: vec![CmsAttr {
            name: "id".into(),
            value: "a\"b<\t\n\r&".into(),
        }],
        text: "".into(),
    });
    for text in [" x ", "\n\r\t", "a]]>b", "&lt;", "", "é \u{1} z"] {
        r.nodes.push(CmsNode {
            depth: 1,
            name: "v".into(),
            attrs: vec![],
            text: text.into(),
        });
    }
    let xml = write_cms_records("s", Some("cb"), std::slice::from_ref(&r));
    let b = parse_cms_xml(&xml).unwrap();
    assert_eq!(b.session.as_deref(), Some("s"));
    assert_eq!(b.call_bridge.as_deref(), Some("cb"));
    assert_eq!(b.records, vec![r]);
}
