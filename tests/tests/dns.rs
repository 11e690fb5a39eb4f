//! The gateway's DNS server as users meet it: the real `dig` and `kdig` over UDP and TCP, for
//! every record kind of the Multi-Cluster Services DNS specification, negative answers,
//! truncation with TCP fallback, EDNS, and names that are not ours.

use std::net::SocketAddr;

use meshfed_tests::dns::{Tool, Transport, ask};
use meshfed_tests::federation::{Cluster, Federation};

/// East exports an HTTP service and a headless one with 40 endpoints (more SRV records than
/// fit in a UDP answer); west exports a service to east.
async fn federation() -> anyhow::Result<Federation> {
    let backend: SocketAddr = "127.0.0.1:9".parse()?;
    let pods: Vec<SocketAddr> = (1..=40)
        .map(|i| SocketAddr::from(([127, 0, 1, i], 8080)))
        .collect();
    let east = Cluster::new("east")?
        .export("checkout.shop", backend, &["west"])
        .export_headless("db.data", &pods, &["west"]);
    let west = Cluster::new("west")?.export("greeter.demo", backend, &["east"]);
    Federation::start(vec![east, west]).await
}

#[tokio::test]
async fn every_mcs_record_kind_resolves_with_dig_and_kdig() -> anyhow::Result<()> {
    let federation = federation().await?;
    let dns = federation.gateway("east").addrs().dns;
    let db_srv: Vec<String> = {
        let mut records: Vec<String> = (1..=40)
            .map(|i| {
                format!(
                    "_http._tcp.db.data.svc.clusterset.local. 5 IN SRV 0 100 80 127-0-1-{i}.east.db.data.svc.clusterset.local."
                )
            })
            .collect();
        records.sort();
        records
    };
    let cases: Vec<(&str, &str, &str, Vec<String>)> = vec![
        ("checkout.shop.svc.clusterset.local", "A", "NOERROR",
            vec!["checkout.shop.svc.clusterset.local. 5 IN A 127.0.0.1".into()]),
        ("checkout.shop.svc.clusterset.local", "AAAA", "NOERROR", vec![]),
        ("_http._tcp.checkout.shop.svc.clusterset.local", "SRV", "NOERROR",
            vec!["_http._tcp.checkout.shop.svc.clusterset.local. 5 IN SRV 0 100 80 checkout.shop.svc.clusterset.local.".into()]),
        ("_grpc._tcp.checkout.shop.svc.clusterset.local", "SRV", "NXDOMAIN", vec![]),
        ("dns-version.clusterset.local", "TXT", "NOERROR",
            vec!["dns-version.clusterset.local. 5 IN TXT \"1.0.0\"".into()]),
        ("greeter.demo.svc.clusterset.local", "A", "NOERROR",
            vec!["greeter.demo.svc.clusterset.local. 5 IN A 127.0.0.1".into()]),
        ("greeter.demo.west.meshfed.internal", "A", "NOERROR",
            vec!["greeter.demo.west.meshfed.internal. 5 IN A 127.0.0.1".into()]),
        ("checkout.shop.east.meshfed.internal", "A", "NOERROR",
            vec!["checkout.shop.east.meshfed.internal. 5 IN A 127.0.0.1".into()]),
        ("greeter.demo.east.meshfed.internal", "A", "NXDOMAIN", vec![]),
        // The specification forbids a cluster's name under the clusterset name.
        ("east.checkout.shop.svc.clusterset.local", "A", "NXDOMAIN", vec![]),
        ("db.data.svc.clusterset.local", "A", "NOERROR",
            vec!["db.data.svc.clusterset.local. 5 IN A 127.0.0.1".into()]),
        ("127-0-1-7.east.db.data.svc.clusterset.local", "A", "NOERROR",
            vec!["127-0-1-7.east.db.data.svc.clusterset.local. 5 IN A 127.0.0.1".into()]),
        ("127-0-1-77.east.db.data.svc.clusterset.local", "A", "NXDOMAIN", vec![]),
        ("_http._tcp.db.data.svc.clusterset.local", "SRV", "NOERROR", db_srv.clone()),
        ("shop.svc.clusterset.local", "A", "NOERROR", vec![]),
        ("nope.shop.svc.clusterset.local", "A", "NXDOMAIN", vec![]),
        ("clusterset.local", "NS", "NOERROR",
            vec!["clusterset.local. 5 IN NS ns.clusterset.local.".into()]),
        ("ns.clusterset.local", "A", "NOERROR", vec!["ns.clusterset.local. 5 IN A 127.0.0.1".into()]),
        ("example.com", "A", "REFUSED", vec![]),
        ("local", "SOA", "REFUSED", vec![]),
    ];
    for tool in [Tool::Dig, Tool::Kdig] {
        for transport in [Transport::Udp, Transport::Tcp] {
            for (name, rtype, status, answers) in &cases {
                let reply = ask(tool, transport, dns, name, rtype, &[]).await?;
                let what = format!(
                    "{tool:?} over {transport:?}: {name} {rtype}\n{}",
                    reply.text
                );
                assert_eq!(reply.status, *status, "{what}");
                assert_eq!(reply.answers, *answers, "{what}");
                let ours = *status != "REFUSED";
                assert_eq!(reply.flags.contains(&"aa".to_owned()), ours, "{what}");
                assert!(
                    !reply.flags.contains(&"ra".to_owned()),
                    "{what}: no recursion"
                );
                let negative = ours && answers.is_empty();
                let soa = if negative {
                    vec!["SOA".to_owned()]
                } else {
                    vec![]
                };
                assert_eq!(reply.authority_types, soa, "{what}");
                assert_eq!(reply.edns_payload, Some(1232), "{what}: EDNS(0) answered");
            }
        }
    }

    // The apex SOA, over each tool.
    for tool in [Tool::Dig, Tool::Kdig] {
        let reply = ask(tool, Transport::Udp, dns, "clusterset.local", "SOA", &[]).await?;
        assert_eq!(reply.answers.len(), 1, "{}", reply.text);
        assert!(
            reply.answers[0].starts_with(
                "clusterset.local. 5 IN SOA ns.clusterset.local. hostmaster.clusterset.local."
            ),
            "{}",
            reply.text
        );
    }
    federation.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_complete_over_tcp() -> anyhow::Result<()> {
    let federation = federation().await?;
    let dns = federation.gateway("east").addrs().dns;
    let name = "_http._tcp.db.data.svc.clusterset.local";
    for tool in [Tool::Dig, Tool::Kdig] {
        // Told not to retry over TCP, the client sees the truncated UDP answer...
        let udp = ask(tool, Transport::Udp, dns, name, "SRV", &["+ignore"]).await?;
        assert!(
            udp.flags.contains(&"tc".to_owned()),
            "{tool:?}: {}",
            udp.text
        );
        assert!(udp.answers.is_empty(), "{tool:?}: {}", udp.text);
        // ...and left to itself, it retries over TCP and gets every record.
        let fallback = ask(tool, Transport::Udp, dns, name, "SRV", &[]).await?;
        assert_eq!(fallback.answers.len(), 40, "{tool:?}: {}", fallback.text);
        assert!(
            !fallback.flags.contains(&"tc".to_owned()),
            "{tool:?}: {}",
            fallback.text
        );
        // Without EDNS the limit is 512 bytes: a small answer still fits.
        let plain = ask(
            tool,
            Transport::Udp,
            dns,
            "checkout.shop.svc.clusterset.local",
            "A",
            &["+noedns"],
        )
        .await?;
        assert_eq!(plain.answers.len(), 1, "{tool:?}: {}", plain.text);
        assert_eq!(
            plain.edns_payload, None,
            "{tool:?}: no EDNS in, none out: {}",
            plain.text
        );
    }
    federation.shutdown().await;
    Ok(())
}
