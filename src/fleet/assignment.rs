//! The consumer protocol's member assignment (`ConsumerProtocolAssignment`),
//! parsed from the bytes DescribeGroups returns: bounds-checked, never
//! panicking, whatever a broker sends.

use serde::Serialize;

/// A malformed `ConsumerProtocolAssignment`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    /// The input ends inside a field.
    #[error(
        "assignment truncated: {field} needs {needed} bytes at offset {offset}, {available} left"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset in the input.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
        /// Bytes left.
        available: usize,
    },
    /// A length or count is negative where null is not allowed.
    #[error("assignment has a negative {field} ({value}) at offset {offset}")]
    NegativeLength {
        /// The field being read.
        field: &'static str,
        /// Its offset in the input.
        offset: usize,
        /// The value read.
        value: i32,
    },
    /// A topic name is not UTF-8.
    #[error("assignment has a topic name that is not UTF-8 at offset {offset}")]
    InvalidTopic {
        /// The name's offset in the input.
        offset: usize,
    },
}

/// A group member's assignment in the Kafka consumer protocol
/// (`ConsumerProtocolAssignment`, versions 0 to 3 share this layout).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MemberAssignment {
    /// The protocol version the assignor wrote.
    pub version: i16,
    /// Assigned partitions by topic, in wire order.
    pub partitions: Vec<(String, Vec<i32>)>,
    /// The assignor's user data (`None` when null).
    pub user_data: Option<Vec<u8>>,
}

/// A bounds-checked big-endian reader.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, field: &'static str, needed: usize) -> Result<&'a [u8], AssignmentError> {
        let available = self.bytes.len() - self.offset;
        if needed > available {
            return Err(AssignmentError::Truncated {
                field,
                offset: self.offset,
                needed,
                available,
            });
        }
        let slice = &self.bytes[self.offset..self.offset + needed];
        self.offset += needed;
        Ok(slice)
    }

    fn i16(&mut self, field: &'static str) -> Result<i16, AssignmentError> {
        let b = self.take(field, 2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, AssignmentError> {
        let b = self.take(field, 4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A non-negative int32 count or length.
    fn len32(&mut self, field: &'static str) -> Result<usize, AssignmentError> {
        let offset = self.offset;
        let value = self.i32(field)?;
        usize::try_from(value).map_err(|_| AssignmentError::NegativeLength {
            field,
            offset,
            value,
        })
    }

    fn string(&mut self, field: &'static str) -> Result<String, AssignmentError> {
        let offset = self.offset;
        let len = self.i16(field)?;
        let len = usize::try_from(len).map_err(|_| AssignmentError::NegativeLength {
            field,
            offset,
            value: len.into(),
        })?;
        let bytes = self.take(field, len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| AssignmentError::InvalidTopic { offset })
    }

    fn nullable_bytes(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, AssignmentError> {
        let offset = self.offset;
        match self.i32(field)? {
            -1 => Ok(None),
            len => {
                let len = usize::try_from(len).map_err(|_| AssignmentError::NegativeLength {
                    field,
                    offset,
                    value: len,
                })?;
                Ok(Some(self.take(field, len)?.to_vec()))
            }
        }
    }
}

/// Parses a member assignment: int16 version, an array of (string topic,
/// array of int32 partitions), then nullable user-data bytes.
///
/// Empty input is an empty assignment (what the brokers return for a member
/// still joining, as Kafka's own admin client treats it). Bytes after the
/// user data (fields of a later version) are ignored.
pub fn parse_assignment(bytes: &[u8]) -> Result<MemberAssignment, AssignmentError> {
    if bytes.is_empty() {
        return Ok(MemberAssignment::default());
    }
    let mut r = Reader { bytes, offset: 0 };
    let version = r.i16("version")?;
    let topics = r.len32("topic count")?;
    // Counts come from the input: never reserve more than it can hold.
    let mut partitions = Vec::with_capacity(topics.min(bytes.len() / 6));
    for _ in 0..topics {
        let topic = r.string("topic name")?;
        let count = r.len32("partition count")?;
        let mut list = Vec::with_capacity(count.min(bytes.len() / 4));
        for _ in 0..count {
            list.push(r.i32("partition")?);
        }
        partitions.push((topic, list));
    }
    let user_data = r.nullable_bytes("user data")?;
    Ok(MemberAssignment {
        version,
        partitions,
        user_data,
    })
}

#[cfg(test)]
/// Encodes an assignment the way Kafka's ConsumerProtocol does.
pub(super) fn encode(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
    let mut b = version.to_be_bytes().to_vec();
    b.extend((topics.len() as i32).to_be_bytes());
    for (t, ps) in topics {
        b.extend((t.len() as i16).to_be_bytes());
        b.extend(t.as_bytes());
        b.extend((ps.len() as i32).to_be_bytes());
        for p in *ps {
            b.extend(p.to_be_bytes());
        }
    }
    match user_data {
        None => b.extend((-1i32).to_be_bytes()),
        Some(d) => {
            b.extend((d.len() as i32).to_be_bytes());
            b.extend(d);
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_with_two_topics_and_user_data() {
        let bytes = encode(1, &[("nginx", &[0, 2]), ("app", &[5])], Some(b"\x00\x01"));
        let a = parse_assignment(&bytes).unwrap();
        assert_eq!(a.version, 1);
        assert_eq!(
            a.partitions,
            vec![("nginx".into(), vec![0, 2]), ("app".into(), vec![5])]
        );
        assert_eq!(a.user_data, Some(vec![0, 1]));
    }

    #[test]
    fn assignment_with_null_user_data_and_no_partitions() {
        let a = parse_assignment(&encode(0, &[], None)).unwrap();
        assert_eq!(a, MemberAssignment::default());
        let a = parse_assignment(&encode(3, &[("t", &[])], Some(b""))).unwrap();
        assert_eq!(a.partitions, vec![("t".into(), vec![])]);
        assert_eq!(a.user_data, Some(vec![]));
    }

    #[test]
    fn empty_input_is_an_empty_assignment() {
        assert_eq!(parse_assignment(&[]).unwrap(), MemberAssignment::default());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode(1, &[("nginx", &[0, 2]), ("app", &[5])], Some(b"xyz"));
        for len in 1..bytes.len() {
            let err = parse_assignment(&bytes[..len]).unwrap_err();
            assert!(
                matches!(err, AssignmentError::Truncated { .. }),
                "{len}: {err}"
            );
        }
        let err = parse_assignment(&bytes[..9]).unwrap_err();
        assert_eq!(
            err,
            AssignmentError::Truncated {
                field: "topic name",
                offset: 8,
                needed: 5,
                available: 1
            }
        );
    }

    #[test]
    fn trailing_bytes_of_a_later_version_are_ignored() {
        let mut bytes = encode(4, &[("t", &[1])], None);
        bytes.extend([0, 0, 0]);
        assert_eq!(
            parse_assignment(&bytes).unwrap().partitions,
            vec![("t".into(), vec![1])]
        );
    }

    #[test]
    fn negative_lengths_are_errors() {
        // Topic count -1.
        let bytes = [0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            parse_assignment(&bytes),
            Err(AssignmentError::NegativeLength {
                field: "topic count",
                ..
            })
        ));
        // Topic name length -2.
        let bytes = [0, 0, 0, 0, 0, 1, 0xff, 0xfe];
        assert!(matches!(
            parse_assignment(&bytes),
            Err(AssignmentError::NegativeLength {
                field: "topic name",
                ..
            })
        ));
        // User data length -2 (only -1 means null).
        let mut bytes = encode(0, &[], None);
        let n = bytes.len();
        bytes[n - 1] = 0xfe;
        assert!(matches!(
            parse_assignment(&bytes),
            Err(AssignmentError::NegativeLength {
                field: "user data",
                ..
            })
        ));
    }

    #[test]
    fn huge_counts_fail_without_allocating() {
        // Claims i32::MAX topics, then a partition count of i32::MAX.
        let bytes = [0, 0, 0x7f, 0xff, 0xff, 0xff];
        assert!(parse_assignment(&bytes).is_err());
        let mut bytes = vec![0, 0, 0, 0, 0, 1, 0, 1, b't', 0x7f, 0xff, 0xff, 0xff];
        bytes.extend([0, 0, 0, 1]);
        assert!(matches!(
            parse_assignment(&bytes),
            Err(AssignmentError::Truncated {
                field: "partition",
                ..
            })
        ));
    }

    #[test]
    fn non_utf8_topic_is_an_error() {
        let bytes = encode(0, &[("ab", &[0])], None);
        let mut bad = bytes.clone();
        bad[8] = 0xff;
        assert_eq!(
            parse_assignment(&bad),
            Err(AssignmentError::InvalidTopic { offset: 6 })
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let _ = parse_assignment(&bytes);
        }

        #[test]
        fn encoded_assignments_round_trip(
            version in 0i16..4,
            topics in proptest::collection::vec(("[a-z.]{1,12}", proptest::collection::vec(0i32..1000, 0..8)), 0..5),
            user_data in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..16)),
        ) {
            let refs: Vec<(&str, &[i32])> = topics.iter().map(|(t, p)| (t.as_str(), p.as_slice())).collect();
            let parsed = parse_assignment(&encode(version, &refs, user_data.as_deref())).unwrap();
            proptest::prop_assert_eq!(parsed.version, version);
            proptest::prop_assert_eq!(parsed.partitions, topics);
            proptest::prop_assert_eq!(parsed.user_data, user_data);
        }
    }
}
