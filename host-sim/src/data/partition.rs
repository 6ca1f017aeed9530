//! Turning [`Ratings`] into per-client datasets and the train/val/test user split.
//!
//! Follows the two presets of docs/SEMANTICS.md: the tutorial keeps each user's first ratings in file order
//! (the device shuffles later), the paper shuffles each user's ratings with numpy seed 42 before
//! cutting. Both shuffle the user list with numpy seed 42 and split it 80/10/10 with the tutorial's
//! `split_tf_datasets` arithmetic, so the same users land in the same split as in the references.

use crate::config::{DataConfig, ExampleOrder};
use crate::data::movielens::Ratings;
use crate::data::numpy_rng;

/// A list of clients stored contiguously (CSR): client `c` owns `offsets[c]..offsets[c + 1]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientSet {
    users: Vec<u32>,
    offsets: Vec<u32>,
    items: Vec<u32>,
    ratings: Vec<f32>,
}

/// One client's dataset, in the order the device receives it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Client<'a> {
    /// Dense user id (for bookkeeping only; the device never sees it, docs/SEMANTICS.md "Data").
    pub user: u32,
    /// Dense item ids.
    pub items: &'a [u32],
    /// Ratings, parallel to `items`.
    pub ratings: &'a [f32],
}

impl Client<'_> {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the client has no examples.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl ClientSet {
    fn new() -> Self {
        Self {
            offsets: vec![0],
            ..Self::default()
        }
    }

    fn push(&mut self, user: u32, items: impl IntoIterator<Item = (u32, f32)>) {
        for (i, r) in items {
            self.items.push(i);
            self.ratings.push(r);
        }
        self.users.push(user);
        self.offsets.push(self.items.len() as u32);
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when there are no clients.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Total examples over all clients.
    pub fn examples(&self) -> usize {
        self.items.len()
    }

    /// Dense user id of every client, in split order.
    pub fn users(&self) -> &[u32] {
        &self.users
    }

    /// Client `c`.
    ///
    /// # Panics
    /// If `c >= self.len()`.
    pub fn client(&self, c: usize) -> Client<'_> {
        let range = self.offsets[c] as usize..self.offsets[c + 1] as usize;
        Client {
            user: self.users[c],
            items: &self.items[range.clone()],
            ratings: &self.ratings[range],
        }
    }

    /// All clients in split order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Client<'_>> + '_ {
        (0..self.len()).map(|c| self.client(c))
    }
}

/// The three disjoint user populations.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// Training clients.
    pub train: ClientSet,
    /// Validation clients (never trained on).
    pub val: ClientSet,
    /// Test clients (never trained on).
    pub test: ClientSet,
}

/// Split points as the tutorial's `split_tf_datasets` computes them: `int(n * train)` and
/// `int(n * (train + val))`, in f64 like Python (so 0.8 + 0.1 is 0.9000000000000001).
pub(crate) fn split_points(n: usize, train_fraction: f64, val_fraction: f64) -> (usize, usize) {
    let clamp = |x: f64| (x.max(0.0) as usize).min(n);
    let train_end = clamp(n as f64 * train_fraction);
    let val_end = clamp(n as f64 * (train_fraction + val_fraction)).max(train_end);
    (train_end, val_end)
}

/// Builds the clients and the user split from `ratings` as `data` describes.
///
/// Users are dense ids `0..min(users, max_clients)`; each keeps at most `max_ratings_per_user`
/// ratings, cut in file order or after a numpy `RandomState(example_shuffle_seed)` shuffle
/// re-seeded per user; the user list is shuffled with numpy `RandomState(user_split_seed)`.
pub fn partition(ratings: &Ratings, data: &DataConfig) -> Partition {
    let n = data
        .max_clients
        .map_or(ratings.users(), |m| m.min(ratings.users()));
    let cap = data.max_ratings_per_user.unwrap_or(usize::MAX);

    let mut order: Vec<u32> = (0..n as u32).collect();
    numpy_rng::shuffle_with_seed(data.user_split_seed, &mut order);
    let (train_end, val_end) = split_points(n, data.train_fraction, data.val_fraction);

    let mut scratch: Vec<u32> = Vec::new();
    let mut build = |users: &[u32]| {
        let mut set = ClientSet::new();
        for &user in users {
            let mine = ratings.user(user as usize);
            scratch.clear();
            scratch.extend(0..mine.items.len() as u32);
            if data.order == ExampleOrder::ShuffleThenCap {
                numpy_rng::shuffle_with_seed(data.example_shuffle_seed, &mut scratch);
            }
            let kept = &scratch[..scratch.len().min(cap)];
            set.push(
                user,
                kept.iter()
                    .map(|&k| (mine.items[k as usize], mine.values[k as usize])),
            );
        }
        set
    };
    Partition {
        train: build(&order[..train_end]),
        val: build(&order[train_end..val_end]),
        test: build(&order[val_end..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Preset};

    /// Ten users (raw ids 1..=10 in order); user d has d + 1 ratings of items 0..=d, rated 1..5.
    fn ten_users() -> Ratings {
        let mut records = Vec::new();
        for u in 0..10u32 {
            for i in 0..=u {
                records.push((u + 1, i + 1, (1 + i % 5) as f32, i));
            }
        }
        Ratings::from_records(records)
    }

    fn data(order: ExampleOrder, max_clients: Option<usize>, cap: Option<usize>) -> DataConfig {
        DataConfig {
            max_clients,
            max_ratings_per_user: cap,
            order,
            ..Config::preset(Preset::Paper).data
        }
    }

    /// The tutorial's `int(n * 0.8)`, `int(n * (0.8 + 0.1))`; ML-1M gives 4832 / 604 / 604 and the
    /// tutorial's 2000 users 1600 / 200 / 200 (docs/SEMANTICS.md).
    #[test]
    fn split_points_follow_python() {
        assert_eq!(split_points(6040, 0.8, 0.1), (4832, 5436));
        assert_eq!(split_points(2000, 0.8, 0.1), (1600, 1800));
        assert_eq!(split_points(10, 0.8, 0.1), (8, 9));
        assert_eq!(split_points(0, 0.8, 0.1), (0, 0));
        assert_eq!(split_points(3, 0.8, 0.1), (2, 2));
    }

    /// Users are shuffled as numpy `RandomState(42).shuffle(list(range(10)))` =
    /// [8, 1, 5, 0, 7, 2, 9, 4, 3, 6] (numpy 2.4), then cut 8 / 1 / 1.
    #[test]
    fn user_split_follows_numpy_shuffle() {
        let p = partition(&ten_users(), &data(ExampleOrder::FileOrder, None, None));
        assert_eq!(p.train.users(), [8, 1, 5, 0, 7, 2, 9, 4]);
        assert_eq!(p.val.users(), [3]);
        assert_eq!(p.test.users(), [6]);
        assert_eq!(
            p.train.examples() + p.val.examples() + p.test.examples(),
            55
        );
    }

    /// Tutorial order: the first `cap` ratings in file order, only users below `max_clients`.
    #[test]
    fn file_order_takes_first_ratings() {
        let p = partition(
            &ten_users(),
            &data(ExampleOrder::FileOrder, Some(5), Some(3)),
        );
        // numpy RandomState(42).shuffle(list(range(5))) = [1, 4, 2, 0, 3]; split 4 / 0 / 1.
        assert_eq!(p.train.users(), [1, 4, 2, 0]);
        assert!(p.val.is_empty());
        assert_eq!(p.test.users(), [3]);
        let c = p.train.client(1);
        assert_eq!(c.user, 4);
        assert_eq!(c.items, [0, 1, 2]);
        assert_eq!(c.ratings, [1.0, 2.0, 3.0]);
        assert_eq!(p.train.client(0).items, [0, 1]);
    }

    /// Paper order: each user's ratings shuffled by a fresh numpy `RandomState(42)` before the
    /// cut; for 5 ratings that permutation is [1, 4, 2, 0, 3] (numpy 2.4).
    #[test]
    fn shuffle_then_cap_reseeds_per_user() {
        let p = partition(
            &ten_users(),
            &data(ExampleOrder::ShuffleThenCap, None, Some(3)),
        );
        let user4 = p
            .test
            .iter()
            .chain(p.train.iter())
            .chain(p.val.iter())
            .find(|c| c.user == 4)
            .unwrap();
        assert_eq!(user4.items, [1, 4, 2]);
        assert_eq!(user4.ratings, [2.0, 5.0, 3.0]);
        // A 3-rating user: RandomState(42).shuffle([0, 1, 2]) leaves it as is.
        let user2 = p.train.iter().find(|c| c.user == 2).unwrap();
        assert_eq!(user2.items, [0, 1, 2]);
        // A 10-rating user: [8, 1, 5, 0, 7, 2, 9, 4, 3, 6] cut to 3.
        let user9 = p.train.iter().find(|c| c.user == 9).unwrap();
        assert_eq!(user9.items, [8, 1, 5]);
    }
}
