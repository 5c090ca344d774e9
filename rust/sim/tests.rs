use super::*;
use crate::config::Named;
use crate::sched::PolicyKind;

fn config(replicas: usize, router: &str, policy: &str, blocks: u64) -> SimConfig {
    let mut eng = SchedulerConfig::new(blocks, 16);
    eng.policy = PolicyKind::parse(policy).unwrap();
    let cost = CostModel::Roofline(Preset::by_name("llama-3-8b/h100").unwrap().roofline(16));
    SimConfig::new(replicas, router, eng, cost)
}

struct Trace {
    arrival: Vec<f64>,
    prompt: Vec<i64>,
    output: Vec<i64>,
}

impl Trace {
    fn view(&self) -> TraceView<'_> {
        TraceView {
            arrival_time: &self.arrival,
            prompt_tokens: &self.prompt,
            output_tokens: &self.output,
            predicted_output_tokens: None,
        }
    }
}

fn trace(n: usize, rate: f64) -> Trace {
    let mut x: u64 = 12345;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut t = 0.0;
    let mut arrival = Vec::new();
    let mut prompt = Vec::new();
    let mut output = Vec::new();
    for _ in 0..n {
        t += (next() % 1000) as f64 / 500.0 / rate;
        arrival.push(t);
        prompt.push(1 + (next() % 2000) as i64);
        output.push(1 + (next() % 300) as i64);
    }
    Trace {
        arrival,
        prompt,
        output,
    }
}

#[test]
fn every_row_is_accounted_for_and_clocks_are_monotone() {
    let tr = trace(400, 20.0);
    for policy in ["fcfs", "no_preempt", "sjf", "larry", "oracle_srpt"] {
        for router in ["round_robin", "sal", "random"] {
            let cfg = config(3, router, policy, 400);
            let out = simulate(tr.view(), &cfg).unwrap();
            for (i, &out_len) in tr.output.iter().enumerate() {
                assert_eq!(out.status[i], STATUS_FINISHED, "{policy}/{router} row {i}");
                assert!(out.first_token_time[i] > out.arrival_time[i]);
                assert!(out.finish_time[i] >= out.first_token_time[i]);
                assert_eq!(out.output_tokens[i], out_len);
            }
            let mut last = [0.0; 3];
            for k in 0..out.step_time.len() {
                let r = out.step_replica[k] as usize;
                assert!(out.step_duration[k] > 0.0);
                assert!(out.step_time[k] >= last[r]);
                last[r] = out.step_time[k] + out.step_duration[k];
            }
            if policy == "no_preempt" {
                assert!(out.preemptions.iter().all(|&p| p == 0));
            }
        }
    }
}

#[test]
fn deterministic_for_a_seed() {
    let tr = trace(300, 30.0);
    let mut cfg = config(4, "power_of_two", "larry", 300);
    cfg.seed = 7;
    cfg.snapshot_interval = Some(0.5);
    let a = simulate(tr.view(), &cfg).unwrap();
    let b = simulate(tr.view(), &cfg).unwrap();
    assert_eq!(a, b);
}

#[test]
fn too_large_requests_are_rejected_rows() {
    let mut tr = trace(50, 10.0);
    tr.prompt[3] = 100_000; // > 200 blocks * 16 tokens
    let cfg = config(2, "sal", "fcfs", 200);
    let out = simulate(tr.view(), &cfg).unwrap();
    assert_eq!(out.status[3], STATUS_REJECTED);
    assert!(out.reject_reason[3].starts_with("request_too_large"));
    assert_eq!(out.replica[3], -1);
    assert_eq!(
        out.status.iter().filter(|&&s| s == STATUS_FINISHED).count(),
        49
    );
}

#[test]
fn bad_config_is_an_error() {
    let tr = trace(5, 1.0);
    assert!(matches!(
        simulate(tr.view(), &config(0, "sal", "fcfs", 64)),
        Err(Error::Config {
            field: "replicas",
            ..
        })
    ));
    assert!(matches!(
        simulate(tr.view(), &config(1, "nope", "fcfs", 64)),
        Err(Error::UnknownName {
            field: "router",
            ..
        })
    ));
    assert!(matches!(
        PolicyKind::parse("nope"),
        Err(Error::UnknownName {
            field: "policy",
            ..
        })
    ));
    let empty = Trace {
        arrival: vec![],
        prompt: vec![],
        output: vec![],
    };
    let out = simulate(empty.view(), &config(1, "sal", "fcfs", 64)).unwrap();
    assert!(out.status.is_empty());
}

#[test]
fn capacity_is_positive_and_grows_with_memory() {
    let tr = trace(500, 1.0);
    let small = measure_capacity(tr.view(), &config(1, "sal", "fcfs", 300), 500).unwrap();
    let large = measure_capacity(tr.view(), &config(1, "sal", "fcfs", 3000), 500).unwrap();
    assert!(small > 0.0 && large > small, "{small} {large}");
}
