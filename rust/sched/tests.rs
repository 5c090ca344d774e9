//! Unit tests of the scheduler core (the cross-check against the Python reference lives in
//! tests/test_parity.py).
use super::*;
use crate::config::Named;

fn cfg(policy: &str, blocks: u64) -> SchedulerConfig {
    SchedulerConfig {
        num_cpu_blocks: 8,
        max_num_seqs: 4,
        max_num_batched_tokens: 64,
        watermark: Some(0.0),
        policy: PolicyKind::parse(policy).unwrap(),
        ..SchedulerConfig::new(blocks, 4)
    }
}

fn drain(s: &mut Scheduler, max_steps: usize) -> Vec<RequestId> {
    let mut done = Vec::new();
    let mut t = 0.0;
    for _ in 0..max_steps {
        if s.num_live() == 0 {
            break;
        }
        let plan = s.schedule(Some(t)).unwrap();
        s.check_invariants().unwrap();
        t += 0.01;
        done.extend(
            s.update(plan.step, plan.scheduler_id, &[], Some(t))
                .unwrap(),
        );
        s.check_invariants().unwrap();
    }
    done
}

#[test]
fn every_policy_drains_a_workload() {
    for name in policy_names() {
        for &(mode, _) in PreemptMode::REGISTRY {
            let mut c = cfg(name, 12);
            c.preemption_mode = mode;
            let mut s = Scheduler::new(c).unwrap();
            for i in 0..10 {
                s.add_request(
                    NewRequest::new(i as i64, 3 + (i * 7) % 9, 2 + i % 5).arrival(i as f64 * 0.001),
                )
                .unwrap();
            }
            let done = drain(&mut s, 10_000);
            assert_eq!(done.len(), 10, "{name}/{mode}");
            assert_eq!(s.num_free_gpu_blocks(), 12);
            assert_eq!(s.num_free_cpu_blocks(), 8);
        }
    }
}

#[test]
fn fcfs_preempts_most_recently_admitted() {
    // 4 blocks of 4 tokens; two requests of 8 tokens each fill the cache; the first decode
    // token needs a fifth block, so the second (most recent) is preempted.
    let mut s = Scheduler::new(cfg("fcfs", 4)).unwrap();
    s.add_request(NewRequest::new("a", 8, 10).arrival(0.0))
        .unwrap();
    s.add_request(NewRequest::new("b", 8, 10).arrival(1.0))
        .unwrap();
    let p = s.schedule(Some(1.0)).unwrap();
    assert_eq!(p.admitted.len(), 2);
    s.update(p.step, p.scheduler_id, &[], None).unwrap();
    let p = s.schedule(None).unwrap();
    let b = s.slot_of(&"b".into());
    assert!(b.is_some());
    assert_eq!(p.preempted, vec![(b.unwrap(), PreemptMode::Recompute)]);
    assert_eq!(p.scheduled.len(), 1);
}

#[test]
fn errors_leave_state_unchanged() {
    let mut s = Scheduler::new(cfg("fcfs", 4)).unwrap();
    s.add_request(NewRequest::new("a", 3, 2)).unwrap();
    assert!(matches!(
        s.add_request(NewRequest::new("a", 3, 2)),
        Err(Error::DuplicateRequest { .. })
    ));
    assert!(matches!(
        s.add_request(NewRequest::new("big", 16, 2)),
        Err(Error::RequestTooLarge { need_blocks: 5, .. })
    ));
    assert!(matches!(
        s.add_request(NewRequest::new("nan", 3, 2).arrival(f64::NAN)),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        s.abort(&"zzz".into()),
        Err(Error::UnknownRequest { .. })
    ));
    assert_eq!(s.num_waiting(), 1);
    let p = s.schedule(Some(2.0)).unwrap();
    assert!(matches!(
        s.schedule(Some(2.0)),
        Err(Error::StalePlan { .. })
    ));
    assert!(matches!(
        s.update(p.step, p.scheduler_id, &[], Some(1.0)),
        Err(Error::Clock { .. })
    ));
    assert!(matches!(
        s.update(p.step + 1, p.scheduler_id, &[], None),
        Err(Error::StalePlan { .. })
    ));
    s.update(p.step, p.scheduler_id, &[], None).unwrap();
    s.check_invariants().unwrap();
}

#[test]
fn config_errors_name_valid_values() {
    match PolicyKind::parse("lary") {
        Err(Error::UnknownName { valid, .. }) => assert!(valid.contains(&"larry")),
        _ => panic!("expected UnknownName"),
    }
    assert!(Scheduler::new(cfg("fcfs", 0)).is_err());
}

#[test]
fn check_fits_refuses_counts_beyond_the_limits_instead_of_wrapping() {
    // Found by the fuzz target: `prompt + 1` overflowed (and wrapped to "fits" in release).
    let s = Scheduler::new(SchedulerConfig::new(8, 4)).unwrap();
    let id = RequestId::Int(1);
    for (prompt, out) in [(u64::MAX, 1), (1, u64::MAX), (0, 1), ((1 << 40) + 1, 1)] {
        assert!(matches!(
            s.check_fits(&id, prompt, out),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(s.check_fits(&id, 31, 1).is_ok());
}
