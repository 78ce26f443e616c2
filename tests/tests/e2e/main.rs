//! End-to-end tests: real etcd, snmpd, Kafka-compatible broker and
//! Elasticsearch-API server, real `vigil-agent` and `vigil-aggregator` binaries.
//! One target, one set of servers per run, one module per topic.

mod agent_restart;
mod alert_logs;
mod alert_notify;
mod alert_outage;
mod alert_rules;
mod alert_state;
mod all_in_one;
mod derive;
mod etcd_client;
mod health;
mod hostile_messages;
mod index_dashboards;
mod index_documents;
mod index_setup;
mod index_throttling;
mod journald;
mod kubernetes_logs;
mod log_faults;
mod log_parsing;
mod malformed;
mod metric_spool;
mod notify_outage;
mod pipeline;
mod secrets_in_output;
mod servers;
mod slow_elasticsearch;
mod snmp;
mod snmp_etcd;
mod snmp_scheduling;
mod tls;
