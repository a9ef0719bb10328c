#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

#[test]
fn shares_one_limit_and_gives_back() {
    let budget = Budget::new(100);
    let mut a = budget.charge();
    let mut b = budget.charge();
    assert_eq!(a.hold(60), Ok(()));
    assert_eq!(
        b.hold(50),
        Err(OverBudget {
            wanted: 50,
            limit: 100
        })
    );
    assert_eq!(b.hold(40), Ok(()));
    assert_eq!(budget.used(), 100);
    assert_eq!(a.hold(10), Ok(()));
    assert_eq!(budget.used(), 50);
    drop(a);
    drop(b);
    assert_eq!(budget.used(), 0);
}
