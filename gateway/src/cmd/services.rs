//! `meshfed services`: what a running gateway exports and imports, from which clusters, with
//! endpoint health. Reads `GET /services` from the gateway's admin listener.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;
use meshfed_gateway::services::ServicesReport;

/// How long the admin listener has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn run(admin: SocketAddr, json: bool) -> ExitCode {
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(fetch(admin)));
    match report {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("meshfed services: {error}");
                ExitCode::FAILURE
            }
        },
        Ok(report) => {
            print!("{}", report.table());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("meshfed services: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn fetch(admin: SocketAddr) -> anyhow::Result<ServicesReport> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(admin)
            .await
            .with_context(|| format!("cannot reach the admin listener at {admin}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::get("/services")
            .header(http::header::HOST, admin.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(
            status.is_success(),
            "{admin} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
        serde_json::from_slice(&body)
            .context("the admin listener's answer is not a services report")
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer from {admin} within {TIMEOUT:?}"))?
}
