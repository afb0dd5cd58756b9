//! `topology apply` declares Warren's exchanges, queues and bindings from the configuration
//! (idempotent: what consumers do at start-up); `topology diff` compares them with the broker
//! and exits 1 when they differ, like diff(1).

use lapin::types::AMQPValue;
use serde_json::{Value, json};
use warren_infra::topology::{self, Plan};

use crate::cli::TopologyAction;
use crate::context::Ctx;
use crate::errors::{CtlError, Result};
use crate::output;

pub async fn run(ctx: &Ctx, action: TopologyAction) -> Result<()> {
    let plan = Plan::from_settings(&ctx.settings);
    match action {
        TopologyAction::Apply => {
            let conn = ctx.connect().await?;
            let ch = conn.create_channel().await?;
            topology::declare(&ch, &ctx.settings).await?;
            let _ = conn.close(200, "declared".into()).await;
            let summary = json!({"exchanges": plan.exchanges.len(), "queues": plan.queues.len(), "bindings": plan.bindings.len()});
            if ctx.json {
                output::json(&summary);
            } else {
                output::line(format!(
                    "declared {} exchanges, {} queues, {} bindings in vhost {}",
                    plan.exchanges.len(),
                    plan.queues.len(),
                    plan.bindings.len(),
                    ctx.vhost
                ));
            }
            Ok(())
        }
        TopologyAction::Diff => diff(ctx, &plan),
    }
}

fn diff(ctx: &Ctx, plan: &Plan) -> Result<()> {
    let exchanges = ctx.mgmt.exchanges(&ctx.vhost)?;
    let queues = ctx.mgmt.queues(&ctx.vhost)?;
    let bindings = ctx.mgmt.bindings(&ctx.vhost)?;
    let mut diffs: Vec<String> = Vec::new();
    for (name, kind) in &plan.exchanges {
        match exchanges.iter().find(|e| e["name"] == name.as_str()) {
            None => diffs.push(format!("+ exchange {name} ({kind}) is missing")),
            Some(e) if e["type"] != *kind => diffs.push(format!("~ exchange {name} is {} (config: {kind})", e["type"])),
            Some(_) => {}
        }
    }
    for (name, args) in &plan.queues {
        let Some(q) = queues.iter().find(|q| q.name == *name) else {
            diffs.push(format!("+ queue {name} is missing"));
            continue;
        };
        let want_type = args.inner().get("x-queue-type").map(amqp_json).unwrap_or_else(|| Value::from("classic"));
        if let Some(have) = q.queue_type.as_deref()
            && want_type != have
        {
            // Its other arguments follow from its type: one line that says what to do.
            diffs.push(format!(
                "~ queue {name} is a {have} queue (config: {}); a queue's type cannot change: `warrenctl dump {name} \
                 --ack --out saved.jsonl`, delete it, `warrenctl topology apply`, `warrenctl load saved.jsonl`",
                want_type.as_str().unwrap_or("?")
            ));
            continue;
        }
        for (k, v) in args.inner() {
            let want = amqp_json(v);
            let key = k.as_str();
            let have = q.arguments.get(key).cloned().unwrap_or(Value::Null);
            // The broker reports x-queue-type only for non-classic queues on some versions.
            let default_classic = key == "x-queue-type" && want == "classic" && have.is_null();
            if have != want && !default_classic {
                diffs.push(format!("~ queue {name}: {key} is {have} (config: {want})"));
            }
        }
    }
    for (queue, exchange, key) in &plan.bindings {
        let found = bindings.iter().any(|b| {
            b["source"] == exchange.as_str() && b["destination"] == queue.as_str() && b["routing_key"] == key.as_str()
        });
        if !found {
            diffs.push(format!("+ binding {exchange} --{key}--> {queue} is missing"));
        }
    }
    // Leftovers: queues named like Warren's that the configuration no longer has (e.g. delay
    // queues of a retry tier that was removed).
    let ours: Vec<&str> = ctx.settings.routes.iter().map(|r| r.queue.as_str()).collect();
    for q in &queues {
        let name = q.name.as_str();
        let related = ours.iter().any(|o| name.starts_with(&format!("{o}.")));
        if related && !plan.queues.iter().any(|(n, _)| n == name) {
            diffs.push(format!("- queue {name} exists but is not in the configuration ({} messages)", q.messages));
        }
    }
    if ctx.json {
        output::json(&json!({"vhost": ctx.vhost, "differences": diffs}));
    } else if diffs.is_empty() {
        output::line(format!("no differences: the broker has the configured topology (vhost {})", ctx.vhost));
    } else {
        for d in &diffs {
            output::line(d);
        }
    }
    if diffs.is_empty() { Ok(()) } else { Err(CtlError::Differs(diffs.len())) }
}

fn amqp_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::LongString(s) => Value::from(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Value::from(s.as_str()),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::Boolean(b) => Value::from(*b),
        other => Value::from(format!("{other:?}")),
    }
}
