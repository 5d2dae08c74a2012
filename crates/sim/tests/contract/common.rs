//! Helpers for driving a real simulator over real sockets on 127.0.0.1:0: a REST client
//! with a token, a WebSocket reader that waits on conditions with deadlines, and the
//! `/sim/` control API.

use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use holdline_proto::rest::Channel;
use holdline_sim::{SimConfig, Simulator};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const USER: &str = "6d1a4e2c-1f0b-4c1e-9a57-2a3b1c9d0e11";
pub const WAIT: Duration = Duration::from_secs(5);

/// A config with a fast heartbeat and no generator.
pub fn fast() -> SimConfig {
    SimConfig {
        heartbeat: Duration::from_secs(30),
        rate: 0.0,
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> Simulator {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(listener, config).unwrap()
}

pub fn basic(id: &str, secret: &str) -> String {
    let raw = format!("{id}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A REST client holding one token.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn login(sim: &Simulator) -> Api {
        Api::login_as(sim, "holdline-demo", "holdline-demo").await
    }

    pub async fn login_as(sim: &Simulator, id: &str, secret: &str) -> Api {
        let http = reqwest::Client::new();
        let reply: Value = http
            .post(format!("{}/oauth/token", sim.url()))
            .header("authorization", basic(id, secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = reply["access_token"].as_str().unwrap().to_owned();
        Api {
            http,
            base: sim.url().to_owned(),
            token,
        }
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    pub async fn create_channel(&self) -> Channel {
        self.req(reqwest::Method::POST, "/api/v2/notifications/channels")
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POST (add) or PUT (replace) subscriptions; returns status and body.
    pub async fn subscribe(
        &self,
        method: reqwest::Method,
        channel: &str,
        topics: &[String],
        query: &str,
    ) -> (u16, Value) {
        let body: Vec<Value> = topics.iter().map(|t| json!({"id": t})).collect();
        let resp = self
            .req(
                method,
                &format!("/api/v2/notifications/channels/{channel}/subscriptions{query}"),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

/// POSTs a fault; returns status and body.
pub async fn fault(sim: &Simulator, fault: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/sim/faults", sim.url()))
        .json(&fault)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// Publishes through the control API; returns the ledger entry.
pub async fn publish(sim: &Simulator, topic: &str, body: Value) -> Value {
    reqwest::Client::new()
        .post(format!("{}/sim/publish", sim.url()))
        .json(&json!({"topic": topic, "body": body}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn ledger(sim: &Simulator) -> Vec<Value> {
    let text = reqwest::get(format!("{}/sim/ledger", sim.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn presence(user: &str) -> String {
    format!("v2.users.{user}.presence")
}

/// How a socket read ended.
#[derive(Debug)]
pub enum End {
    Closed(Option<(u16, String)>),
    Error(String),
    Timeout,
}

pub struct Ws {
    pub inner: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn connect(uri: &str) -> Ws {
        let (inner, _) = tokio_tungstenite::connect_async(uri).await.unwrap();
        Ws { inner }
    }

    pub async fn send(&mut self, text: &str) {
        self.inner.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame, or how the socket ended.
    pub async fn next_text(&mut self, within: Duration) -> Result<String, End> {
        let deadline = Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.inner.next()).await;
            match next {
                Err(_) => return Err(End::Timeout),
                Ok(None) => return Err(End::Closed(None)),
                Ok(Some(Err(e))) => return Err(End::Error(e.to_string())),
                Ok(Some(Ok(Message::Text(t)))) => return Ok(t.to_string()),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Err(End::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The first JSON frame for which `pred` holds, skipping others.
    pub async fn expect(&mut self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_text(left).await {
                Ok(text) => {
                    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    if pred(&v) {
                        return v;
                    }
                }
                Err(end) => panic!("socket ended before the expected frame: {end:?}"),
            }
        }
    }

    /// Reads until the socket ends, skipping frames.
    pub async fn end(&mut self, within: Duration) -> End {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(end) = self.next_text(left).await {
                return end;
            }
        }
    }
}

pub fn is_heartbeat(v: &Value) -> bool {
    v["topicName"] == "channel.metadata" && v["eventBody"]["message"] == "WebSocket Heartbeat"
}

pub fn topic_is(topic: &str) -> impl Fn(&Value) -> bool + '_ {
    move |v| v["topicName"] == topic
}

/// A channel subscribed to `topics` with a socket connected to it.
pub async fn live_channel(api: &Api, topics: &[String]) -> (Channel, Ws) {
    let channel = api.create_channel().await;
    if !topics.is_empty() {
        let (status, body) = api
            .subscribe(reqwest::Method::PUT, &channel.id, topics, "")
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let ws = Ws::connect(&channel.connect_uri).await;
    wait_connected(&api.base, &channel.id, true).await;
    (channel, ws)
}

/// Waits until `/sim/channels` shows the channel (dis)connected.
pub async fn wait_connected(base: &str, id: &str, connected: bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let list: Vec<Value> = reqwest::get(format!("{base}/sim/channels"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if list
            .iter()
            .any(|c| c["id"] == id && c["connected"] == connected)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "channel {id} never became connected={connected}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
