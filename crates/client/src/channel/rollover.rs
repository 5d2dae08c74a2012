//! When a channel must be replaced: `margin` before the channel or the token behind it
//! expires, whichever comes first (sans-io).

use std::time::Duration;

use tokio::time::Instant;

/// The longest life believed from the network: tokens live at most 48 h (the OAuth
/// client's documented maximum), channels 24 h; anything longer is taken as 48 h so that
/// no instant can overflow.
pub const MAX_LIFE: Duration = Duration::from_secs(48 * 3600);

/// When to start replacing a channel that lives `life` from `now` (the shorter of the
/// channel's and its token's), and the margin used. The margin is capped at a quarter of
/// the life but kept at least `floor` (the old socket must outlive the new one's start by
/// more than the gap look-back), then stretched by `stagger` (in [0, 1)) so that slots
/// spread their rollovers.
pub fn rollover_at(
    now: Instant,
    life: Duration,
    margin: Duration,
    floor: Duration,
    stagger: f64,
) -> (Instant, Duration) {
    let life = life.min(MAX_LIFE);
    let margin = margin.min(life / 4).max(floor.min(life / 2));
    let margin = margin
        .mul_f64(1.0 + stagger.clamp(0.0, 0.99))
        .min(life.mul_f64(0.9));
    (now + (life - margin), margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_margin_is_capped_at_a_quarter_of_the_life() {
        let now = Instant::now();
        let (at, margin) = rollover_at(now, S(24 * 3600), S(300), Duration::ZERO, 0.0);
        assert_eq!(margin, S(300));
        assert_eq!(at - now, S(24 * 3600 - 300));
        let (at, margin) = rollover_at(now, S(8), S(300), Duration::ZERO, 0.0);
        assert_eq!(margin, S(2));
        assert_eq!(at - now, S(6));
    }

    #[test]
    fn the_floor_keeps_the_old_socket_beyond_the_lookback() {
        let now = Instant::now();
        let (_, margin) = rollover_at(now, S(8), S(300), S(3), 0.0);
        assert_eq!(margin, S(3));
    }

    #[test]
    fn a_staggered_slot_rolls_over_earlier() {
        let now = Instant::now();
        let (_, plain) = rollover_at(now, S(8), S(300), Duration::ZERO, 0.0);
        let (_, stretched) = rollover_at(now, S(8), S(300), Duration::ZERO, 0.5);
        assert_eq!(stretched, plain.mul_f64(1.5));
    }

    #[test]
    fn an_absurd_life_from_the_network_is_capped_and_cannot_overflow() {
        let now = Instant::now();
        let (at, _) = rollover_at(now, Duration::MAX, S(300), S(1), 0.9);
        assert!(at - now < MAX_LIFE);
    }
}
