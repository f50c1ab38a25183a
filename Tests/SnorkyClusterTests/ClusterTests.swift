import Testing

/// Integration tests of the cluster: real `snorky serve` supervisors with real worker
/// processes and real redis-servers, driven through real sockets.
///
/// Serialized (the nested suites inherit it): they share two cores with other builds, and
/// their timing assertions (delivery resumes within 2 s) must not compete with each other.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct ClusterTests {}
