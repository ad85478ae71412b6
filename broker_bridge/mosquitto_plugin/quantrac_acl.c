/*
 * quantrac_acl: the two rules Mosquitto 2.0.11's acl_file cannot express.
 *
 *   1. Only the users named in `plugin_opt_shared_subscribers` may SUBSCRIBE
 *      to a `$share/...` filter.  acl_file grants every SUBSCRIBE and checks
 *      reads at delivery; a shared group hands each message to one member in
 *      turn and a denied read is dropped, not passed on.  So a station that
 *      joins the collectors' group makes every other message vanish.
 *   2. Nobody may PUBLISH a retained message (or set a retained will) on a
 *      topic matching one of `plugin_opt_no_retain_topics` (space-separated
 *      filters).  acl_file does not see the retain flag.
 *
 * Everything else is deferred to acl_file (MOSQ_ERR_PLUGIN_DEFER).  Mosquitto
 * registers plugin callbacks before the acl_file check, so these run first;
 * plugin options are read at start only (Mosquitto does not reload them on
 * SIGHUP), so a new collector user needs a broker restart.
 *
 * Build: cc -shared -fPIC -o quantrac_acl.so quantrac_acl.c  (scripts/bootstrap.sh)
 * Needs mosquitto_broker.h/mosquitto_plugin.h (Debian: mosquitto-dev, libmosquitto-dev).
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define SHARE_PREFIX "$share/"
#define MAX_WORDS 256

struct word_list {
	char *buffer;            /* the option value, split in place */
	char *words[MAX_WORDS];
	int count;
};

struct rules {
	struct word_list shared_subscribers;
	struct word_list no_retain_topics;
};

static mosquitto_plugin_id_t *plugin_id;
static struct rules rules;

static int split_words(struct word_list *list, const char *value)
{
	char *saveptr = NULL;
	char *word;

	list->buffer = mosquitto_strdup(value);
	if(!list->buffer) return MOSQ_ERR_NOMEM;
	for(word = strtok_r(list->buffer, " \t,", &saveptr); word; word = strtok_r(NULL, " \t,", &saveptr)){
		if(list->count == MAX_WORDS){
			mosquitto_log_printf(MOSQ_LOG_ERR, "quantrac_acl: more than %d entries in one option", MAX_WORDS);
			return MOSQ_ERR_INVAL;
		}
		list->words[list->count++] = word;
	}
	return MOSQ_ERR_SUCCESS;
}

static bool is_listed(const struct word_list *list, const char *name)
{
	int i;
	if(!name) return false;
	for(i = 0; i < list->count; i++){
		if(!strcmp(list->words[i], name)) return true;
	}
	return false;
}

static bool matches_any(const struct word_list *filters, const char *topic)
{
	bool match;
	int i;
	for(i = 0; i < filters->count; i++){
		match = false;
		if(mosquitto_topic_matches_sub(filters->words[i], topic, &match) == MOSQ_ERR_SUCCESS && match) return true;
	}
	return false;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *user = mosquitto_client_username(ed->client);
	(void)event;
	(void)userdata;

	if(ed->access == MOSQ_ACL_SUBSCRIBE && !strncmp(ed->topic, SHARE_PREFIX, strlen(SHARE_PREFIX))
			&& !is_listed(&rules.shared_subscribers, user)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "quantrac_acl: denied shared subscription '%s' to user '%s'",
				ed->topic, user ? user : "(none)");
		return MOSQ_ERR_ACL_DENIED;
	}
	if(ed->access == MOSQ_ACL_WRITE && ed->retain && matches_any(&rules.no_retain_topics, ed->topic)){
		mosquitto_log_printf(MOSQ_LOG_NOTICE, "quantrac_acl: denied retained publish on '%s' by user '%s'",
				ed->topic, user ? user : "(none)");
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;
	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options, int option_count)
{
	int i;
	int rc = MOSQ_ERR_SUCCESS;
	(void)userdata;

	memset(&rules, 0, sizeof(rules));
	for(i = 0; i < option_count && rc == MOSQ_ERR_SUCCESS; i++){
		if(!strcmp(options[i].key, "shared_subscribers")){
			rc = split_words(&rules.shared_subscribers, options[i].value);
		}else if(!strcmp(options[i].key, "no_retain_topics")){
			rc = split_words(&rules.no_retain_topics, options[i].value);
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR, "quantrac_acl: unknown option plugin_opt_%s", options[i].key);
			rc = MOSQ_ERR_INVAL;
		}
	}
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	for(i = 0; i < rules.no_retain_topics.count; i++){
		if(mosquitto_sub_topic_check(rules.no_retain_topics.words[i]) != MOSQ_ERR_SUCCESS){
			mosquitto_log_printf(MOSQ_LOG_ERR, "quantrac_acl: plugin_opt_no_retain_topics: '%s' is not a topic filter",
					rules.no_retain_topics.words[i]);
			return MOSQ_ERR_INVAL;
		}
	}
	plugin_id = identifier;
	mosquitto_log_printf(MOSQ_LOG_INFO, "quantrac_acl: %d shared subscriber(s), %d no-retain filter(s)",
			rules.shared_subscribers.count, rules.no_retain_topics.count);
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_free(rules.shared_subscribers.buffer);
	mosquitto_free(rules.no_retain_topics.buffer);
	memset(&rules, 0, sizeof(rules));
	return MOSQ_ERR_SUCCESS;
}
