//! Traces across two gateways, received by a test OTLP collector (`meshfed_tests::otlp`, a
//! tonic server on the published OpenTelemetry protobuf definitions): east exports over gRPC,
//! west over HTTP. One request that crosses both is one trace of four spans (east's server and
//! client spans, west's server and client spans), each the child of the one before, and the
//! upstream is handed the last as its parent. An incoming W3C or B3 context is continued; a
//! caller's "not sampled" is obeyed.

use bytes::Bytes;
use http::{Method, StatusCode};
use meshfed_tests::client::{self, Reply};
use meshfed_tests::echo::Echo;
use meshfed_tests::otlp::{Collector, Received, attribute, hex};
use meshfed_tests::{Cluster, Federation};

const GREETER: &str = "greeter.demo.svc.clusterset.local";
/// Span kinds in OTLP.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

/// A federation whose gateways both trace everything to `collector`.
async fn traced(collector: &Collector, greeter: &Echo) -> anyhow::Result<Federation> {
    let west = Cluster::new("west")?.export("greeter.demo", greeter.addr(), &["east"]);
    let tracing = |protocol: &str| {
        format!(
            "tracing: {{ otlp_endpoint: \"{}\", otlp_protocol: {protocol} }}",
            collector.endpoint()
        )
    };
    Federation::builder(vec![Cluster::new("east")?, west])
        .config("east", &tracing("grpc"))
        .config("west", &tracing("http/protobuf"))
        .start()
        .await
}

/// `GET greeter` through east, with `headers`.
async fn call(federation: &Federation, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    let east = federation.gateway("east").addrs().http;
    let reply = client::send(east, Method::GET, GREETER, "/", headers, Bytes::new()).await?;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    Ok(reply)
}

/// A request header as the echo upstream received it (it lists them in its answer).
fn seen(reply: &Reply, name: &str) -> Option<String> {
    reply.text().lines().find_map(|line| {
        let (n, v) = line.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then(|| v.to_owned())
    })
}

/// The trace ID and parent span ID of the `traceparent` the upstream received.
fn upstream_context(reply: &Reply) -> (String, String, String) {
    let traceparent = seen(reply, "traceparent").expect("the upstream got a traceparent");
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(fields.len(), 4, "{traceparent}");
    (fields[1].into(), fields[2].into(), fields[3].into())
}

/// The one span of `spans` from `service` of `kind`.
fn one<'a>(spans: &'a [Received], service: &str, kind: i32) -> &'a Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|r| r.service == service && r.span.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "{service} kind {kind}: {spans:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_across_two_gateways_is_one_trace_with_linked_spans() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let greeter = Echo::start("greeter in west").await?;
    let federation = traced(&collector, &greeter).await?;

    let reply = call(&federation, &[]).await?;
    let (trace_id, parent, flags) = upstream_context(&reply);
    assert_eq!(flags, "01", "sampled");
    let spans = collector.trace(&trace_id, 4).await?;
    assert_eq!(spans.len(), 4, "{spans:#?}");

    let east_server = one(&spans, "meshfed-east", SERVER);
    let east_client = one(&spans, "meshfed-east", CLIENT);
    let west_server = one(&spans, "meshfed-west", SERVER);
    let west_client = one(&spans, "meshfed-west", CLIENT);
    assert!(east_server.span.parent_span_id.is_empty(), "a new trace");
    assert_eq!(east_client.span.parent_span_id, east_server.span.span_id);
    assert_eq!(west_server.span.parent_span_id, east_client.span.span_id);
    assert_eq!(west_client.span.parent_span_id, west_server.span.span_id);
    assert_eq!(
        hex(&west_client.span.span_id),
        parent,
        "the upstream's parent"
    );
    // Each gateway exported its own spans, over its own protocol.
    assert_eq!((east_server.via, west_server.via), ("grpc", "http"));

    let get = |r: &Received, key: &str| attribute(&r.span, key);
    assert_eq!(east_server.span.name, "GET greeter.demo");
    for server in [east_server, west_server] {
        assert_eq!(
            get(server, "meshfed.service").as_deref(),
            Some("greeter.demo")
        );
        assert_eq!(
            get(server, "meshfed.source_cluster").as_deref(),
            Some("east")
        );
        assert_eq!(
            get(server, "meshfed.destination_cluster").as_deref(),
            Some("west")
        );
        assert_eq!(
            get(server, "http.response.status_code").as_deref(),
            Some("200")
        );
    }
    assert_eq!(
        get(east_server, "meshfed.direction").as_deref(),
        Some("outbound")
    );
    assert_eq!(
        get(west_server, "meshfed.direction").as_deref(),
        Some("inbound")
    );
    assert_eq!(get(east_client, "meshfed.peer").as_deref(), Some("west"));
    assert_eq!(get(east_client, "meshfed.attempt").as_deref(), Some("1"));
    assert_eq!(
        get(west_client, "meshfed.peer"),
        None,
        "west serves it locally"
    );
    let source = get(west_server, "meshfed.source").unwrap_or_default();
    assert!(source.starts_with("spiffe://east.test/"), "{source}");
    // Times nest: each child starts no earlier and ends no later than its parent.
    for (outer, inner) in [
        (east_server, east_client),
        (east_client, west_server),
        (west_server, west_client),
    ] {
        let (o, i) = (&outer.span, &inner.span);
        assert!(
            o.start_time_unix_nano <= i.start_time_unix_nano,
            "{o:?} {i:?}"
        );
        assert!(o.end_time_unix_nano >= i.end_time_unix_nano, "{o:?} {i:?}");
    }
    // Nothing more arrives for the trace once the exporters have flushed again.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let count = collector
        .spans()
        .iter()
        .filter(|r| hex(&r.span.trace_id) == trace_id)
        .count();
    assert_eq!(count, 4);
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_retry_is_a_client_span_of_its_own() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let greeter = Echo::start("greeter in west").await?;
    greeter.fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    let federation = traced(&collector, &greeter).await?;
    let east = federation.gateway("east").addrs().http;
    let reply = client::get(east, GREETER, "/").await?;
    // The default retries: a 503 is a gateway error, tried twice more.
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.headers["x-meshfed-attempts"], "3");
    let is_root = |r: &Received| r.service == "meshfed-east" && r.span.kind == SERVER;
    meshfed_tests::wait::until(
        std::time::Duration::from_secs(20),
        "east's server span",
        || collector.spans().iter().any(is_root),
    )
    .await?;
    let trace_id = collector
        .spans()
        .iter()
        .find(|r| is_root(r))
        .map(|r| hex(&r.span.trace_id))
        .unwrap_or_default();
    let spans = collector.trace(&trace_id, 10).await?;
    let root = one(&spans, "meshfed-east", SERVER);
    assert_eq!(
        attribute(&root.span, "meshfed.attempts").as_deref(),
        Some("3")
    );
    let mut tries: Vec<&Received> = spans
        .iter()
        .filter(|r| r.service == "meshfed-east" && r.span.kind == CLIENT)
        .collect();
    tries.sort_by_key(|r| attribute(&r.span, "meshfed.attempt"));
    let attempts: Vec<String> = tries
        .iter()
        .filter_map(|r| attribute(&r.span, "meshfed.attempt"))
        .collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    for tried in &tries {
        assert_eq!(tried.span.parent_span_id, root.span.span_id);
        assert_eq!(
            attribute(&tried.span, "http.response.status_code").as_deref(),
            Some("503")
        );
        // Each try is served under its own span at west.
        let served = spans
            .iter()
            .filter(|r| r.service == "meshfed-west" && r.span.parent_span_id == tried.span.span_id)
            .count();
        assert_eq!(served, 1);
    }
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_trace_headers_pass_through_untouched() -> anyhow::Result<()> {
    let greeter = Echo::start("greeter in west").await?;
    let west = Cluster::new("west")?.export("greeter.demo", greeter.addr(), &["east"]);
    let federation = Federation::start(vec![Cluster::new("east")?, west]).await?;
    let sent = [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("tracestate", "vendor=opaque"),
        ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
    ];
    let reply = call(&federation, &sent).await?;
    for (name, value) in sent {
        assert_eq!(seen(&reply, name).as_deref(), Some(value), "{name}");
    }
    federation.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_context_is_continued_in_w3c_and_b3() -> anyhow::Result<()> {
    let collector = Collector::start().await?;
    let greeter = Echo::start("greeter in west").await?;
    let federation = traced(&collector, &greeter).await?;
    let caller_span = "00f067aa0ba902b7";

    // W3C, with a vendor's tracestate carried to the upstream untouched.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-{caller_span}-01");
    let reply = call(
        &federation,
        &[
            ("traceparent", &traceparent),
            ("tracestate", "vendor=opaque"),
        ],
    )
    .await?;
    let (seen_trace, _, _) = upstream_context(&reply);
    assert_eq!(seen_trace, trace);
    assert_eq!(seen(&reply, "tracestate").as_deref(), Some("vendor=opaque"));
    let spans = collector.trace(trace, 4).await?;
    let east_server = one(&spans, "meshfed-east", SERVER);
    assert_eq!(hex(&east_server.span.parent_span_id), caller_span);
    assert_eq!(east_server.span.trace_state, "vendor=opaque");

    // B3 multi-header with a 64-bit trace ID: widened for OTLP and W3C, and the upstream
    // gets B3 back, naming the last gateway span as its parent.
    let short = "a3ce929d0e0e4736";
    let reply = call(
        &federation,
        &[
            ("x-b3-traceid", short),
            ("x-b3-spanid", caller_span),
            ("x-b3-sampled", "1"),
        ],
    )
    .await?;
    let widened = format!("0000000000000000{short}");
    let (seen_trace, parent, _) = upstream_context(&reply);
    assert_eq!(seen_trace, widened);
    assert_eq!(
        seen(&reply, "x-b3-traceid").as_deref(),
        Some(widened.as_str())
    );
    assert_eq!(
        seen(&reply, "x-b3-spanid").as_deref(),
        Some(parent.as_str())
    );
    assert_eq!(seen(&reply, "x-b3-sampled").as_deref(), Some("1"));
    let spans = collector.trace(&widened, 4).await?;
    let east_server = one(&spans, "meshfed-east", SERVER);
    assert_eq!(hex(&east_server.span.parent_span_id), caller_span);

    // B3 single header.
    let trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let reply = call(&federation, &[("b3", &format!("{trace}-{caller_span}-1"))]).await?;
    let (seen_trace, parent, _) = upstream_context(&reply);
    assert_eq!(seen_trace, trace);
    let b3 = seen(&reply, "b3").unwrap_or_default();
    assert!(b3.starts_with(&format!("{trace}-{parent}-1-")), "{b3}");
    collector.trace(trace, 4).await?;

    // A caller's "not sampled" is carried on and obeyed: no spans, whatever the ratio.
    let unsampled = "11111111111111111111111111111111";
    let traceparent = format!("00-{unsampled}-{caller_span}-00");
    let reply = call(&federation, &[("traceparent", &traceparent)]).await?;
    let (seen_trace, _, flags) = upstream_context(&reply);
    assert_eq!((seen_trace.as_str(), flags.as_str()), (unsampled, "00"));
    // A sampled request after it: once its spans are in, the unsampled one's would be too.
    let reply = call(&federation, &[]).await?;
    let (after, _, _) = upstream_context(&reply);
    collector.trace(&after, 4).await?;
    let leaked: Vec<Received> = collector
        .spans()
        .into_iter()
        .filter(|r| hex(&r.span.trace_id) == unsampled)
        .collect();
    assert!(leaked.is_empty(), "{leaked:#?}");
    federation.shutdown().await;
    Ok(())
}
