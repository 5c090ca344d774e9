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
            block_ids: None,
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
fn the_queue_pops_by_time_then_kind_then_push_order() {
    let mut q = Queue {
        heap: BinaryHeap::new(),
        seq: 0,
    };
    q.push(1.0, Event::Start { replica: 0 });
    q.push(1.0, Event::Snapshot);
    q.push(1.0, Event::Arrival { row: 3 });
    q.push(1.0, Event::StepEnd { replica: 2 });
    q.push(1.0, Event::StepEnd { replica: 1 });
    q.push(0.5, Event::Start { replica: 5 });
    let order: Vec<Event> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
    assert_eq!(
        order,
        [
            Event::Start { replica: 5 },
            Event::StepEnd { replica: 2 },
            Event::StepEnd { replica: 1 },
            Event::Arrival { row: 3 },
            Event::Snapshot,
            Event::Start { replica: 0 },
        ]
    );
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
fn outputs_the_cache_cannot_hold_are_truncated_rows() {
    let mut tr = trace(50, 10.0);
    tr.prompt[5] = 3000; // 200 blocks * 16 tokens = 3200: room for about 200 output tokens
    tr.output[5] = 484;
    let cfg = config(2, "round_robin", "fcfs", 200);
    let out = simulate(tr.view(), &cfg).unwrap();
    assert_eq!(out.status[5], STATUS_TRUNCATED);
    assert!(out.output_tokens[5] < 484, "{}", out.output_tokens[5]);
    assert!(
        out.reject_reason[5].starts_with("kv_cache: prompt 3000 + output 484"),
        "{}",
        out.reject_reason[5]
    );
    let finished = out.status.iter().filter(|&&s| s == STATUS_FINISHED).count();
    assert_eq!(finished, 49);
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

/// FNV-1a over every column of the output, floats by their bits: equal fingerprints mean
/// bit-for-bit equal outputs (up to a 64-bit collision).
fn fingerprint(out: &SimOutput) -> u64 {
    let bits = |col: &[f64]| col.iter().map(|v| v.to_bits() as i64).collect::<Vec<_>>();
    let columns = [
        out.replica.clone(),
        bits(&out.arrival_time),
        bits(&out.first_token_time),
        bits(&out.finish_time),
        out.prompt_tokens.clone(),
        out.output_tokens.clone(),
        out.preemptions.clone(),
        out.status.iter().map(|&s| i64::from(s)).collect(),
        bits(&out.step_time),
        bits(&out.step_duration),
        out.step_replica.clone(),
        out.step_batch_size.clone(),
        out.step_prefill_tokens.clone(),
        out.step_decode_tokens.clone(),
        out.step_kv_blocks_used.clone(),
        out.step_queue_length.clone(),
        out.step_preempted.clone(),
        vec![out.num_steps as i64, out.end_time.to_bits() as i64],
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for col in &columns {
        eat(&(col.len() as u64).to_le_bytes());
        col.iter().for_each(|v| eat(&v.to_le_bytes()));
    }
    for reason in &out.reject_reason {
        eat(reason.as_bytes());
        eat(&[0]);
    }
    h
}

struct Case<'a> {
    name: &'a str,
    trace: &'a Trace,
    predicted: Option<&'a [i64]>,
    config: SimConfig,
    fingerprint: u64,
}

/// Seeded runs whose full output was fingerprinted before the event loop was rewritten as
/// one handler per event (issue 7): the rewrite changes no event, order or number.
#[test]
fn seeded_runs_match_recorded_fingerprints() {
    let tr = trace(600, 40.0);
    let mut with_rejections = trace(300, 20.0);
    with_rejections.prompt[7] = 100_000;
    with_rejections.prompt[150] = 50_000;
    let predicted: Vec<i64> = tr.output.iter().map(|&o| (o * 3 / 2).max(1)).collect();
    let mut cases = Vec::new();
    for (policy, router, replicas, snapshot, fingerprint) in [
        ("fcfs", "round_robin", 1, None, 0x4e3c_e0c1_31c0_f3b9),
        ("fcfs", "round_robin", 8, None, 0x409f_5ad6_ab20_cb53),
        ("fcfs", "sal", 8, Some(0.5), 0xe206_6a77_4301_03eb),
        ("larry", "round_robin", 1, None, 0xede9_c643_0db6_ff2c),
        ("larry", "sal", 8, None, 0xfe58_da6c_c492_da6c),
        ("larry", "llumnix", 8, Some(0.25), 0x1352_def7_15cd_08bc),
        ("larry", "power_of_two", 8, Some(0.5), 0x4dd3_7cdf_2fa1_57f3),
        ("fcfs", "sal", 1, Some(0.5), 0x4e3c_e0c1_31c0_f3b9),
    ] {
        let mut config = config(replicas, router, policy, 500);
        config.seed = 5;
        config.snapshot_interval = snapshot;
        cases.push(Case {
            name: policy,
            trace: &tr,
            predicted: None,
            config,
            fingerprint,
        });
    }
    let mut config = self::config(3, "sal", "fcfs", 200);
    config.max_output_tokens = 1200;
    cases.push(Case {
        name: "rejections",
        trace: &with_rejections,
        predicted: None,
        config,
        fingerprint: 0x4e6c_e5a4_a1c5_1afe,
    });
    let mut config = self::config(2, "least_tokens", "larry", 300);
    config.engine.preemption_mode = crate::config::PreemptMode::Swap;
    config.engine.num_cpu_blocks = 100;
    config.snapshot_interval = Some(0.3);
    cases.push(Case {
        name: "swap",
        trace: &tr,
        predicted: None,
        config,
        fingerprint: 0x021d_e1fe_78c2_3a1d,
    });
    let mut config = self::config(4, "sal", "sjf", 400);
    config.record_steps = false;
    cases.push(Case {
        name: "sjf-predicted",
        trace: &tr,
        predicted: Some(&predicted),
        config,
        fingerprint: 0x0787_377a_9bc9_8268,
    });

    let mut got = Vec::new();
    for case in &cases {
        let view = TraceView {
            predicted_output_tokens: case.predicted,
            block_ids: None,
            ..case.trace.view()
        };
        let out = simulate(view, &case.config).unwrap();
        let rejected = out.status.iter().filter(|&&s| s == STATUS_REJECTED).count();
        let preempted: i64 = out.preemptions.iter().sum();
        let fp = fingerprint(&out);
        println!(
            "{} {} x{}: {fp:#018x} rejected={rejected} preemptions={preempted} steps={}",
            case.name, case.config.router, case.config.num_replicas, out.num_steps
        );
        got.push(fp);
    }
    for (case, fp) in cases.iter().zip(got) {
        assert_eq!(fp, case.fingerprint, "{}: {fp:#018x}", case.name);
    }
}

/// Issue 11 item 2: a snapshot interval that cannot progress, or would push more than
/// `MAX_SNAPSHOTS` snapshots, is refused before the run, naming the field and the count.
#[test]
fn snapshot_intervals_that_cannot_finish_are_refused_up_front() {
    let tr = trace(50, 1.0);
    let span = tr.arrival.last().unwrap() - tr.arrival[0];
    for dt in [1e-300, 1e-9, span / (MAX_SNAPSHOTS as f64 * 2.0)] {
        let mut cfg = config(1, "round_robin", "fcfs", 300);
        cfg.snapshot_interval = Some(dt);
        match simulate(tr.view(), &cfg) {
            Err(Error::Config { field, message, .. }) => {
                assert_eq!(field, "snapshot_interval");
                assert!(message.contains("snapshots"), "{message}");
            }
            other => panic!("dt {dt}: {other:?}"),
        }
    }
    // Few snapshots (100), but below the clock's resolution at 1e11 s (steps of 1.5e-5 s):
    // `now + dt == now`, so the clock would never reach the second arrival.
    let late = Trace {
        arrival: vec![1e11, 1e11 + 1e-4],
        prompt: vec![10, 10],
        output: vec![2, 2],
    };
    let mut cfg = config(1, "round_robin", "fcfs", 300);
    cfg.snapshot_interval = Some(1e-6);
    assert!(matches!(
        simulate(late.view(), &cfg),
        Err(Error::Config {
            field: "snapshot_interval",
            ..
        })
    ));
    cfg.snapshot_interval = Some(span / 1000.0);
    assert!(simulate(tr.view(), &cfg).is_ok());
}

/// Issue 11 item 2: the stop hook is called while the run goes, and stops it.
#[test]
fn a_stop_hook_abandons_the_run() {
    let tr = trace(300, 50.0);
    let cfg = config(1, "round_robin", "fcfs", 300);
    let mut calls = 0;
    let res = simulate_until(tr.view(), &cfg, &mut || {
        calls += 1;
        calls == 3
    });
    assert_eq!(res, Ok(None));
    assert_eq!(calls, 3);
    let mut never = || false;
    let full = simulate_until(tr.view(), &cfg, &mut never)
        .unwrap()
        .unwrap();
    assert_eq!(full, simulate(tr.view(), &cfg).unwrap());
}

fn linear(c0: f64) -> CostModel {
    CostModel::Linear(Linear {
        c0,
        c1: 0.0,
        c2: 0.0,
        c3: 0.0,
        swap_s_per_block: 0.0,
    })
}

/// Issue 11 item 4: a row that cannot finish by MAX_TIME is refused before the run, naming
/// the row, its arrival and the cost model (not `now`).
#[test]
fn rows_that_cannot_finish_by_max_time_are_refused_up_front() {
    let mut tr = trace(20, 1.0);
    tr.output[3] = 5000; // 2048 steps (the declared maximum) of 1e9 s each
    let mut cfg = config(1, "round_robin", "fcfs", 300);
    cfg.cost = linear(1e9);
    match simulate(tr.view(), &cfg) {
        Err(Error::InvalidArgument {
            field: "trace",
            index: Some(i),
            message,
            ..
        }) => {
            assert_eq!(i, 3);
            assert!(message.contains("c0=1000000000 s"), "{message}");
            assert!(!message.contains("now"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let near = Trace {
        arrival: vec![1e12 - 1.0, 1e12 - 0.5],
        prompt: vec![10, 10],
        output: vec![1000, 1000],
    };
    cfg.cost = linear(0.01);
    assert!(matches!(
        simulate(near.view(), &cfg),
        Err(Error::InvalidArgument {
            field: "trace",
            index: Some(0),
            ..
        })
    ));
}

/// Issue 11 item 4: when queueing (not one row alone) pushes a step end past MAX_TIME, the
/// run ends with an error naming the step's start, duration and the cost model.
#[test]
fn a_step_ending_after_max_time_names_the_step_and_the_cost_model() {
    // Each row alone needs 2 steps of 0.4 s (fits); all 8 at once on one sequence slot
    // need 16 steps, which pass 1e12.
    let near = Trace {
        arrival: vec![1e12 - 2.0; 8],
        prompt: vec![10; 8],
        output: vec![2; 8],
    };
    let mut cfg = config(1, "round_robin", "fcfs", 300);
    cfg.engine.max_num_seqs = 1;
    cfg.cost = linear(0.4);
    match simulate(near.view(), &cfg) {
        Err(Error::InvalidArgument {
            field: "trace",
            index: None,
            message,
            ..
        }) => {
            assert!(message.contains("step end time"), "{message}");
            assert!(message.contains("c0=0.4 s"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
