//! Frees a socket's spent read buffers on the socket's own thread.
//!
//! Every frame is a view into the buffer the WebSocket read it into (128 KiB, replaced
//! whenever it runs out of room), so a buffer lives until the last event from it has been
//! written, and that last drop happens on the writer thread. glibc then frees the buffer
//! into the socket thread's arena under that arena's lock, the lock the socket thread holds
//! while it allocates the next buffer: the writer blocked on it, and the socket thread paid
//! a wake-up each time. [`Spent`] keeps one handle per buffer and drops it on the socket
//! thread once nothing else refers to the buffer.

use std::collections::VecDeque;

use bytes::Bytes;

/// Most buffers held; past that the oldest handle is let go whether or not its events are
/// written (the buffer is then freed wherever its last event is dropped, as without this).
const MOST: usize = 16;
/// Longest WebSocket frame header: the gap between two frames read into one buffer.
const HEADER_MAX: usize = 14;

/// The read buffers behind a socket's frames, one handle each.
#[derive(Default)]
pub(crate) struct Spent {
    /// The buffer the newest frame came from, and the address just past that frame.
    current: Option<(Bytes, usize)>,
    /// Older buffers, oldest first, each held until its handle here is the only one.
    older: VecDeque<Bytes>,
}

impl Spent {
    /// Notes a text frame as read; frees the oldest buffers nothing else refers to.
    pub(crate) fn saw(&mut self, frame: &Bytes) {
        let start = frame.as_ptr() as usize;
        let end = start + frame.len();
        match &mut self.current {
            // Frames from one buffer sit one after another, a header apart.
            Some((_, next)) if (*next..=*next + HEADER_MAX).contains(&start) => *next = end,
            _ => {
                let handle = frame.clone();
                if let Some((old, _)) = self.current.replace((handle, end)) {
                    self.older.push_back(old);
                }
            }
        }
        while let Some(oldest) = self.older.front() {
            if !oldest.is_unique() && self.older.len() <= MOST {
                break;
            }
            self.older.pop_front();
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.older.len() + usize::from(self.current.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` frames cut from one buffer, a two-byte header before each, as the reader does.
    fn frames_of_one_buffer(n: usize, len: usize) -> Vec<Bytes> {
        let mut buffer = bytes::BytesMut::from(&vec![b'x'; n * (len + 2)][..]);
        (0..n)
            .map(|_| {
                let _header = buffer.split_to(2);
                buffer.split_to(len).freeze()
            })
            .collect()
    }

    #[test]
    fn a_buffer_is_held_until_its_last_frame_is_dropped_then_freed_here() {
        let mut spent = Spent::default();
        let first = frames_of_one_buffer(3, 100);
        for f in &first {
            spent.saw(f);
        }
        assert_eq!(spent.held(), 1, "three frames of one buffer are one buffer");
        let second = frames_of_one_buffer(2, 100);
        spent.saw(&second[0]);
        assert_eq!(
            spent.held(),
            2,
            "the first buffer's frames are still queued"
        );
        drop(first);
        spent.saw(&second[1]);
        assert_eq!(
            spent.held(),
            1,
            "the first buffer was let go once only this held it"
        );
    }

    #[test]
    fn it_never_holds_more_than_its_bound() {
        let mut spent = Spent::default();
        let mut queued = Vec::new();
        for _ in 0..100 {
            let frames = frames_of_one_buffer(1, 50);
            spent.saw(&frames[0]);
            queued.push(frames);
        }
        assert!(spent.held() <= MOST + 1, "{} held", spent.held());
    }
}
