// The Azure Bot resource: registers the messaging endpoint with the Bot Framework
// under the bot's app id, with the Microsoft Teams and Direct Line channels (Web Chat
// is always on; "Test in Web Chat" in the portal uses it).

param tags object = {}
param name string
param displayName string
param sku string = 'F0'

@description('https://<function app host>/api/messages')
param endpoint string

@allowed([
  'UserAssignedMSI'
  'SingleTenant'
])
param appType string

@description('UserAssignedMSI: the identity client id; SingleTenant: the app registration client id.')
param appId string

param tenantId string

@description('UserAssignedMSI only: resource id of the identity.')
param msiResourceId string = ''

resource bot 'Microsoft.BotService/botServices@2022-09-15' = {
  name: name
  location: 'global'
  tags: tags
  kind: 'azurebot'
  sku: {
    name: sku
  }
  properties: {
    displayName: displayName
    endpoint: endpoint
    // Set when the bot is created, never changed after: a redeploy with another app type or
    // app id (a recreated identity) fails until the bot resource is deleted (docs/deploy.md, Redeploying).
    msaAppType: appType
    msaAppId: appId
    msaAppTenantId: tenantId
    msaAppMSIResourceId: appType == 'UserAssignedMSI' ? msiResourceId : null
    publicNetworkAccess: 'Enabled'
  }
}

resource teams 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'MsTeamsChannel'
  location: 'global'
  properties: {
    channelName: 'MsTeamsChannel'
    properties: {
      isEnabled: true
      enableCalling: false
    }
  }
}

resource directLine 'Microsoft.BotService/botServices/channels@2022-09-15' = {
  parent: bot
  name: 'DirectLineChannel'
  location: 'global'
  properties: {
    channelName: 'DirectLineChannel'
    properties: {
      sites: [
        {
          siteName: 'Default Site'
          isEnabled: true
          isV1Enabled: false
          isV3Enabled: true
          isSecureSiteEnabled: false
        }
      ]
    }
  }
}

output name string = bot.name
