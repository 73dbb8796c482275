//! The librdkafka calls that can wait — `subscribe`, `unsubscribe`,
//! `pause`, `resume` hand an operation to librdkafka's main thread and wait
//! for its reply — run here, on a thread of their own, in the order they
//! were asked for (a pause and the resume after it never swap), never on an
//! async worker.

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;

use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::consumer::{KafkaEvent, LogConsumer};
use crate::topic::TopicPartition;

enum Command {
    Subscribe(Vec<String>),
    Pause(TopicPartition),
    Resume(TopicPartition),
}

/// Sends commands to the control thread. Cheap to clone.
#[derive(Clone)]
pub struct Control {
    commands: std_mpsc::Sender<Command>,
}

impl Control {
    /// Starts the control thread of `consumer`. A failed subscription is
    /// reported as [`KafkaEvent::SubscribeFailed`] on `events`. The thread
    /// ends when every handle is dropped.
    pub fn start(
        consumer: Arc<LogConsumer>,
        events: mpsc::UnboundedSender<KafkaEvent>,
    ) -> std::io::Result<Self> {
        let (commands, receiver) = std_mpsc::channel::<Command>();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name("kafka-control".into())
            .spawn(move || {
                let _entered = span.enter();
                while let Ok(command) = receiver.recv() {
                    run(&consumer, &events, command);
                }
            })?;
        Ok(Self { commands })
    }

    /// Replaces the subscription (an empty list unsubscribes).
    pub fn subscribe(&self, topics: Vec<String>) {
        let _ = self.commands.send(Command::Subscribe(topics));
    }

    /// Stops fetching a partition (and drops what librdkafka prefetched of
    /// it).
    pub fn pause(&self, tp: &TopicPartition) {
        let _ = self.commands.send(Command::Pause(tp.clone()));
    }

    /// Fetches a paused partition again.
    pub fn resume(&self, tp: &TopicPartition) {
        let _ = self.commands.send(Command::Resume(tp.clone()));
    }
}

fn list(tp: &TopicPartition) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&tp.topic, tp.partition);
    tpl
}

fn run(consumer: &LogConsumer, events: &mpsc::UnboundedSender<KafkaEvent>, command: Command) {
    match command {
        Command::Subscribe(topics) if topics.is_empty() => {
            consumer.unsubscribe();
            info!("registry is empty; unsubscribed");
        }
        Command::Subscribe(topics) => {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            match consumer.subscribe(&names) {
                Ok(()) => info!(topics = ?names, "subscribed"),
                Err(e) => {
                    warn!(error = %e, topics = ?names, "subscribe failed");
                    let _ = events.send(KafkaEvent::SubscribeFailed(e.to_string()));
                }
            }
        }
        Command::Pause(tp) => match consumer.pause(&list(&tp)) {
            Ok(()) => info!(partition = %tp, "paused fetching"),
            Err(e) => warn!(partition = %tp, error = %e, "cannot pause partition"),
        },
        Command::Resume(tp) => match consumer.resume(&list(&tp)) {
            Ok(()) => debug!(partition = %tp, "fetching resumed"),
            Err(e) => warn!(partition = %tp, error = %e, "cannot resume partition"),
        },
    }
}
